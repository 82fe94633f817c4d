// Drives OHIF 3.13 (/ohif3/) in headless Debian chromium as a clinician would: open the study in
// segmentation mode with the AI's SEG, look at given slices, paint a brush stroke, and store the
// segmentation in the PACS (Export > DICOM SEG > new series > Save).
//
//   node ohif_seg.mjs <plan.json>     (plan written by tests/e2e/test_browser.py)
//
// Prints one JSON line: per slice a screenshot of the viewport canvas and where on screen the
// patient's left is (from the renderer and from OHIF's orientation marker), the brush stroke, the
// STOW-RS answer, and errors the page reported. The Python test judges the pixels and the PACS.
import path from 'node:path';
import { brushStroke, readPlan, runInBrowser, showSlice as showSliceOf } from './common.mjs';

const plan = readPlan();
const result = { slices: [] };
await runInBrowser(plan, result, async page => {
  const url = `${plan.server}/ohif3/segmentation?StudyInstanceUIDs=${plan.study_uid}&SeriesInstanceUIDs=${plan.image_series_uid},${plan.seg_series_uid}`;
  await page.goto(url, { waitUntil: 'load' });

  // Load the AI's SEG into the viewport, as a user does: double-click its thumbnail, confirm.
  await page.getByText(plan.seg_description, { exact: true }).first().dblclick();
  await page.getByRole('button', { name: 'Yes' }).click();
  await page.waitForFunction(() => {
    const segmentations = window.services?.segmentationService?.getSegmentations() ?? [];
    return segmentations.some(s => Object.keys(s.segments ?? {}).length > 0);
  });
  result.segments = await page.evaluate(() => {
    const { segmentationService } = window.services;
    const viewportId = window.cornerstone.getEnabledElements()[0].viewportId;
    return segmentationService.getSegmentations().flatMap(s => Object.values(s.segments).filter(Boolean).map(g => ({
      segmentation: s.label, label: g.label, colour: segmentationService.getSegmentColor(viewportId, s.segmentationId, g.segmentIndex),
    })));
  });

  const canvas = page.locator('.cornerstone-viewport-element canvas').first();
  const showSlice = z => showSliceOf(page, z, plan.z_tolerance_mm, 0);

  for (const z of plan.slices_z) {
    const shown = await showSlice(z);
    const file = path.join(plan.out_dir, `slice_z${z}.png`);
    await canvas.screenshot({ path: file });
    result.slices.push({ z, file, ...shown });
  }

  // The correction: a brush stroke at the given point of a slice (LPS mm), painted into the AI's segment.
  const edit = plan.brush_stroke;
  await showSlice(edit.z);
  await page.locator('[data-cy=Brush-btn]').click();
  result.brush_stroke = { z: edit.z, ...await brushStroke(page, canvas, edit.point_lps, edit.step_px) };
  const editedFile = path.join(plan.out_dir, `edited_z${edit.z}.png`);
  await canvas.screenshot({ path: editedFile });
  result.edited_file = editedFile;

  // Store it: the segmentation's menu, Export > DICOM SEG, a new series with our name, Save.
  // The submenu closes when the pointer's path to it leaves the menu (seen in headless runs): open it by
  // keyboard, and try again if the store dialog did not come.
  let attempt = 1;
  for (; ; attempt++) {
    try {
      await page.locator('[data-cy=segmentation-collapsed-more-btn-Labelmap]').click();
      await page.getByRole('menuitem', { name: 'Export' }).hover();
      await page.keyboard.press('ArrowRight');
      await page.getByRole('menuitem', { name: 'DICOM SEG' }).press('Enter', { timeout: 5000 });
      await page.locator('[data-cy=dialog-input]').waitFor({ timeout: 5000 });
      break;
    } catch (e) {
      if (attempt === 3) throw e;
      await page.keyboard.press('Escape');
    }
  }
  result.export_menu_attempts = attempt;
  await page.locator('[role=dialog] button').first().click();  // the series choice: default is the loaded SEG's series
  await page.getByRole('option', { name: 'Create new series' }).click();
  await page.locator('[data-cy=dialog-input]').fill(plan.export_name);
  const stow = page.waitForResponse(r => r.request().method() === 'POST' && r.url().includes('/proxy/dicom/'));
  await page.locator('[data-cy=input-dialog-save-button]').click();
  const answer = await stow;
  result.stow = { url: answer.url(), status: answer.status(), content_type: answer.request().headers()['content-type'] };
  await page.waitForTimeout(1500);  // OHIF's notification after the store
  result.screenshot = path.join(plan.out_dir, 'ohif_after_store.png');
  await page.screenshot({ path: result.screenshot });
});
