// Drives OHIF 3.13 (/ohif3/) with StrokeLabel's extension and mode (/ohif3/stroke) in headless Debian chromium
// as a clinician would, by clicks and key presses only: open the study, open the StrokeLabel tab, choose a task,
// type the NIHSS, click Run; read what the panel shows; look at given slices.
//
//   node ohif_stroke.mjs <plan.json>     (plan written by tests/e2e/test_browser_stroke.py)
//
// The page's scripts never call the server here; the driver only reads the viewer's state (which React the
// panel was rendered with, OHIF's segmentations) and records the page's requests to the server.
// Prints one JSON line; the Python test judges it.
import path from 'node:path';
import { brushStroke, readPlan, runInBrowser, showSlice } from './common.mjs';

const plan = readPlan();
const result = { runs: [], requests: [], console: [], steps: {} };
const t0 = Date.now();
const step = name => { result.steps[name] = (Date.now() - t0) / 1000; };
const shot = async (page, name) => { const file = path.join(plan.out_dir, `${name}.png`); await page.screenshot({ path: file }); return file; };
await runInBrowser(plan, result, async page => {
  try { await drive(page); } catch (e) { result.failure_screenshot = await shot(page, 'failure').catch(() => null); throw e; }
});

async function drive(page) {
  page.on('console', m => { if (m.type() === 'error' || process.env.STROKELABEL_DRIVER_DEBUG) result.console.push(`${m.type()}: ${m.text().slice(0, 500)}`); });
  page.on('response', async r => {  // what the page asked the server and what it answered (recorded, not changed)
    const u = new URL(r.url());
    if (!/^\/(info|infer|train|activelearning|datastore)\//.test(u.pathname) && !u.pathname.startsWith('/ohif3/strokelabel/')) return;
    const record = { method: r.request().method(), path: u.pathname, query: u.search, status: r.status() };
    result.requests.push(record);
    if (u.pathname.startsWith('/infer/')) record.answer = await r.json().catch(() => null);
  });
  await page.goto(`${plan.server}/ohif3/stroke?StudyInstanceUIDs=${plan.study_uid}`, { waitUntil: 'load' });
  if (plan.login) {
    await page.locator('input[name="username"]').fill(plan.login.username);
    await page.locator('input[name="password"]').fill(plan.login.password);
    await Promise.all([page.waitForURL(u => u.pathname.startsWith('/ohif3/')), page.locator('button[type="submit"]').click()]);
  }
  await page.waitForFunction(() => (window.cornerstone?.getEnabledElements() ?? []).some(e => (e.viewport.getImageIds?.() ?? e.viewport.getActors?.() ?? []).length > 0));
  step('study_shown');
  await page.locator('[data-cy=strokelabel-panel]').waitFor();
  await page.locator('[data-cy=strokelabel-task] option').first().waitFor({ state: 'attached' });
  result.panel = {
    tasks: await page.locator('[data-cy=strokelabel-task] option').evaluateAll(os => os.map(o => o.value)),
    // Read, not changed: which React rendered the panel. The viewer's own root is the only React root in the page.
    react_roots: await page.evaluate(() => [...document.querySelectorAll('*')].filter(e => Object.keys(e).some(k => k.startsWith('__reactContainer$'))).length),
  };
  result.opened = await shot(page, 'opened');

  for (const run of plan.runs) {
    if (run.series_description) {  // the series the task reads, from the study's thumbnails (double-click, as a user)
      await page.getByText(run.series_description, { exact: true }).first().dblclick();
      await page.waitForTimeout(1500);
    }
    await page.locator('[data-cy=strokelabel-task]').selectOption(run.task);
    await page.locator('[data-cy=strokelabel-nihss]').fill(run.nihss ?? '');
    await page.locator('[data-cy=strokelabel-onset]').fill(run.onset ?? '');
    const clicked = Date.now();
    await page.locator('[data-cy=strokelabel-run]').click();
    const progress = await page.locator('[data-cy=strokelabel-run]').textContent();
    await page.locator('[data-cy=strokelabel-answer], [data-cy=strokelabel-error]').first().waitFor({ timeout: plan.infer_timeout_ms });
    const report = { task: run.task, progress_text: progress, seconds_to_answer: (Date.now() - clicked) / 1000 };
    report.error = await page.locator('[data-cy=strokelabel-error]').textContent({ timeout: 100 }).catch(() => null);
    if (!report.error) {
      // OHIF turns to its Segmentation tab when the segmentation arrives; the panel turns back to itself.
      await page.waitForTimeout(1000);
      await page.locator('[data-cy=strokelabel-segmentation]').waitFor();
      report.rows = await page.locator('[data-cy=strokelabel-answer] > div').evaluateAll(rows => rows.map(r => [r.dataset.cy, r.children[1]?.textContent ?? '']));
      report.timing = await page.evaluate(() => window.strokelabel?.lastRun ?? null);
      // Read from the viewer: each segment of each segmentation, with its colour in the viewport showing it.
      report.segments = await page.evaluate(() => {
        const { segmentationService } = window.services;
        const viewportIds = window.cornerstone.getEnabledElements().map(e => e.viewportId);
        return segmentationService.getSegmentations().flatMap(s => Object.values(s.segments ?? {}).filter(Boolean).map(g => {
          const shownIn = viewportIds.filter(v => segmentationService.getSegmentationRepresentations(v, { segmentationId: s.segmentationId }).length);
          return { segmentation: s.label, label: g.label, viewports: shownIn,
                   colour: shownIn.length ? segmentationService.getSegmentColor(shownIn[0], s.segmentationId, g.segmentIndex) : null };
        }));
      });
      report.active_viewport = await page.evaluate(() => window.services.viewportGridService.getActiveViewportId());
      if (process.env.STROKELABEL_DRIVER_DEBUG) report.debug = await page.evaluate(() => ({ enabled: window.cornerstone.getEnabledElements().map(e => e.viewportId), grid: [...window.services.viewportGridService.getState().viewports.values()].map(v => [v.viewportId, v.displaySetInstanceUIDs]) }));
      report.slices = [];
      // The viewport the task ran on is the active one (the series was double-clicked into it).
      const active = await page.evaluate(() => {
        const id = window.services.viewportGridService.getActiveViewportId();
        return { id, index: window.cornerstone.getEnabledElements().findIndex(e => e.viewportId === id) };
      });
      const canvas = await page.evaluateHandle(i => window.cornerstone.getEnabledElements()[i].viewport.canvas, active.index);
      for (const z of run.slices_z ?? []) {
        const shown = await showSlice(page, z, plan.z_tolerance_mm, active.index);
        const file = path.join(plan.out_dir, `${run.task}_z${z}.png`);
        await canvas.screenshot({ path: file });
        report.slices.push({ z, file, ...shown });
      }
    }
    report.screenshot = await shot(page, `${run.task}_answer`);
    result.runs.push(report);
    step(`ran_${run.task}`);
    if (run.save) report.saves = await saveAndCorrect(page, run);
  }
  if (plan.next_study) {
    await page.locator('[data-cy=strokelabel-next]').click();
    await page.waitForURL(u => !u.search.includes(plan.study_uid), { timeout: plan.step_timeout_ms });
    result.next_study_url = page.url();
    result.next_study = await shot(page, 'next_study');
  }
}

// Save the answer unedited (approved), then paint a brush stroke and save again (corrected); each save's STOW-RS
// answer and what the panel said.
async function saveAndCorrect(page, run) {
  const saves = [];
  const save = async name => {
    const label = await page.locator('[data-cy=strokelabel-save]').textContent();
    const stow = page.waitForResponse(r => r.request().method() === 'POST' && r.url().includes('/proxy/dicom/'), { timeout: plan.step_timeout_ms });
    await page.locator('[data-cy=strokelabel-save]').click();
    const answer = await stow;
    await page.locator('[data-cy=strokelabel-saved], [data-cy=strokelabel-error]').first().waitFor();
    await page.waitForTimeout(500);
    const said = await page.locator('[data-cy=strokelabel-saved], [data-cy=strokelabel-error]').first().textContent();
    saves.push({ name, button: label, stow_status: answer.status(), said, screenshot: await shot(page, `saved_${name}`) });
  };
  await save('unedited');
  if (!run.brush_stroke) return saves;
  const edit = run.brush_stroke;
  const active = await page.evaluate(() => {
    const id = window.services.viewportGridService.getActiveViewportId();
    return { id, index: window.cornerstone.getEnabledElements().findIndex(e => e.viewportId === id) };
  });
  await showSlice(page, edit.z, plan.z_tolerance_mm, active.index);
  // OHIF's own brush, in its Segmentation tab; then back to the StrokeLabel tab to save.
  await page.locator('[data-cy=panelSegmentationWithToolsLabelMap-btn]').click();
  await page.locator('[data-cy=Brush-btn]').click();
  const canvas = await page.evaluateHandle(i => window.cornerstone.getEnabledElements()[i].viewport.canvas, active.index);
  await brushStroke(page, canvas, edit.point_lps, edit.step_px, active.index);
  await page.waitForTimeout(500);
  saves.painted_file = await shot(page, 'painted');
  await page.locator('[data-cy=strokelabel-btn]').click();
  await save('painted');
  return saves;
}
