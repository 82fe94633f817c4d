// Drives monailabel's bundled OHIF 3.10 (/ohif/) in headless chromium as a clinician would: open the
// study in the MONAI Label mode, connect the MONAI Label panel to the server, run a task from its
// Auto-Segmentation tab, look at given slices of the axial viewport, then at the study's series list
// (where the summary picture the run filed should be).
//
//   node ohif_panel.mjs <plan.json>     (plan written by tests/e2e/test_browser_panel.py)
//
// With plan.login ({username, password}) it first logs in on the server's /login page, where a server with access
// control on sends the viewer.
//
// Prints one JSON line: what the panel sent (/info, /infer) and what the server answered, the
// segments the panel made, per slice a screenshot of the axial viewport canvas and where on screen the
// patient's left is, and errors the page reported. The Python test judges them.
import path from 'node:path';
import { readPlan, runInBrowser, showSlice } from './common.mjs';

const plan = readPlan();
const result = { slices: [], requests: [], console: [], steps: {} };
const t0 = Date.now();
const step = name => { result.steps[name] = (Date.now() - t0) / 1000; };
await runInBrowser(plan, result, async page => {
  page.on('console', m => { if (m.type() === 'error' || m.type() === 'warning') result.console.push(`${m.type()}: ${m.text()}`.slice(0, 500)); });
  page.on('response', async r => {
    const u = new URL(r.url());
    if (!/^\/(info|infer)\//.test(u.pathname)) return;
    result.requests.push({ method: r.request().method(), url: r.url(), status: r.status(), sent: r.request().postData()?.slice(0, 2000) ?? null,
                           content_type: r.headers()['content-type'] ?? null, bytes: (await r.body().catch(() => Buffer.alloc(0))).length });
  });
  const url = `${plan.server}/ohif/monai-label?StudyInstanceUIDs=${plan.study_uid}&SeriesInstanceUIDs=${plan.image_series_uid}`;
  await page.goto(url, { waitUntil: 'load' });
  if (plan.login) {  // access control on: the server sends the viewer to its login page first
    result.login = { page: page.url() };
    await page.locator('input[name="username"]').fill(plan.login.username);
    await page.locator('input[name="password"]').fill(plan.login.password);
    await Promise.all([page.waitForURL(u => u.pathname.startsWith('/ohif/')), page.locator('button[type="submit"]').click()]);
    result.login.landed = page.url();
    step('logged_in');
  }
  // The MPR layout: wait until the volume is in the viewports.
  await page.waitForFunction(() => {
    const elements = window.cornerstone?.getEnabledElements() ?? [];
    return elements.length > 0 && elements.every(e => (e.viewport.getActors?.() ?? []).length > 0);
  });
  result.viewports = await page.evaluate(() => window.cornerstone.getEnabledElements().map(e => ({
    id: e.viewportId, type: e.viewport.type, normal: e.viewport.getCamera().viewPlaneNormal })));
  step('volume_shown');
  await page.screenshot({ path: path.join(plan.out_dir, 'opened.png') });

  // The panel: the server's address, connect.
  await page.locator('#monailabelServerURL').fill(`${plan.server}/`);
  await page.locator('#monailabelServerURL').press('Tab');
  await page.locator('.settingsTable button.actionButton').click();
  const run = page.locator('button[title="Run Segmentation"]');
  await run.waitFor({ state: 'visible' });
  await page.getByText('Auto-Segmentation', { exact: true }).click();
  const models = run.locator('xpath=ancestor::table[1]//select');
  result.panel_models = (await models.locator('option').allTextContents()).map(m => m.trim());
  await models.selectOption(plan.task);
  await page.screenshot({ path: path.join(plan.out_dir, 'connected.png') });
  const inferred = page.waitForResponse(r => r.url().includes(`/infer/${plan.task}`), { timeout: plan.infer_timeout_ms });
  await run.click();
  step('run_clicked');
  await inferred;
  step('infer_answered');
  // The panel paints the answer into its labelmap after the response: wait for voxels in it.
  await page.waitForFunction(() => {
    const data = window.services.segmentationService.getLabelmapVolume('1')?.voxelManager?.getCompleteScalarDataArray();
    return data && data.some(v => v > 0);
  }, null, { timeout: 30000 }).catch(() => {});
  step('labelmap_painted');
  // The task's segments in the colours the plan gives (saturated, one strongest channel each), so that the
  // test can tell each from the grey image on a screenshot; the geometry is OHIF's own.
  await page.evaluate(colours => {
    const { segmentationService } = window.services;
    const viewportIds = window.cornerstone.getEnabledElements().map(e => e.viewportId);
    for (const s of segmentationService.getSegmentations())
      for (const g of Object.values(s.segments ?? {}).filter(Boolean))
        if (colours[g.label]) for (const v of viewportIds) segmentationService.setSegmentColor(v, s.segmentationId, g.segmentIndex, colours[g.label]);
  }, plan.colours);
  result.segments = await page.evaluate(() => {
    const { segmentationService } = window.services;
    return segmentationService.getSegmentations().flatMap(s => Object.values(s.segments ?? {}).filter(Boolean).map(g => ({
      segmentation: s.label, index: g.segmentIndex, label: g.label,
      colour: Array.from(segmentationService.getSegmentColor('mpr-axial', s.segmentationId, g.segmentIndex) ?? []) })));
  });
  // Voxels of the panel's labelmap, by segment name.
  result.labelmap_voxels_by_label = await page.evaluate(() => {
    const { segmentationService } = window.services;
    const data = segmentationService.getLabelmapVolume('1')?.voxelManager?.getCompleteScalarDataArray();
    if (!data) return null;
    const names = Object.fromEntries(Object.values(segmentationService.getSegmentation('1')?.segments ?? {}).filter(Boolean).map(g => [g.segmentIndex, g.label]));
    const counts = {};
    for (const v of data) if (v) counts[names[v] ?? v] = (counts[names[v] ?? v] ?? 0) + 1;
    return counts;
  });
  result.screenshot = path.join(plan.out_dir, 'after_run.png');
  await page.screenshot({ path: result.screenshot });
  result.panel_text = await page.locator('.monaiLabelPanel').innerText();

  const canvas = page.locator('.cornerstone-viewport-element canvas').first();
  for (const z of plan.slices_z) {
    const shown = await showSlice(page, z, plan.z_tolerance_mm, 0);
    const file = path.join(plan.out_dir, `slice_z${z}.png`);
    await canvas.screenshot({ path: file });
    result.slices.push({ z, file, ...shown });
  }
  step('slices_shown');


  // The figures: the study opened again (all its series) lists the summary picture the run filed; shown on a double click.
  await page.goto(`${plan.server}/ohif/viewer?StudyInstanceUIDs=${plan.study_uid}`, { waitUntil: 'load' });
  const summary = page.getByText(`StrokeLabel ${plan.task} summary`).first();
  await summary.waitFor({ state: 'visible' }).catch(() => {});
  result.series_list = (await page.locator('body').innerText()).split('\n').filter(line => line.includes('StrokeLabel'));
  if (result.series_list.length) {
    await summary.dblclick({ timeout: 10000 }).catch(e => { result.summary_open_error = String(e).slice(0, 300); });
    await page.waitForTimeout(3000);
  }
  result.summary_screenshot = path.join(plan.out_dir, 'summary_shown.png');
  await page.screenshot({ path: result.summary_screenshot });
  step('summary_listed');
});
