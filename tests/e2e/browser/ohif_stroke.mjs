// Drives OHIF 3.13 (/ohif3/) with StrokeLabel's extension and mode (/ohif3/stroke) in headless Debian chromium
// as a clinician would, by clicks and key presses only: log in, open a study, open the StrokeLabel tab, choose a
// task, type the NIHSS, click Run; read what the panel shows; look at given slices; save, paint and save; retrain
// and read the decision; open the next study.
//
//   node ohif_stroke.mjs <plan.json>     (plan written by tests/e2e/test_browser_stroke.py)
//
// The plan is a list of sessions (each its own browser context: its own login), each a list of actions:
// {open: study UID}, {run: {...}}, {retrain: {epochs}}, {next: true}.
// The page's scripts never call the server here; the driver only reads the viewer's state (which React the
// panel was rendered with, OHIF's segmentations) and records the page's requests to the server.
// Prints one JSON line; the Python test judges it.
import path from 'node:path';
import { brushStroke, readPlan, runInBrowser, showSlice } from './common.mjs';

const plan = readPlan();
const result = { sessions: [], requests: [], console: [], steps: {} };
const t0 = Date.now();
const step = name => { let key = name; for (let n = 2; key in result.steps; n++) key = `${name}_${n}`; result.steps[key] = (Date.now() - t0) / 1000; };
let shots = 0;
const shot = async (page, name) => { const file = path.join(plan.out_dir, `${String(++shots).padStart(2, '0')}_${name}.png`); await page.screenshot({ path: file }); return file; };
await runInBrowser(plan, result, async (firstPage, browser) => {
  step('browser_started');
  for (const [i, session] of plan.sessions.entries()) {
    const page = i === 0 ? firstPage : await browser.newPage({ viewport: { width: plan.width ?? 1400, height: plan.height ?? 900 } });
    if (i > 0) {
      page.on('pageerror', e => result.page_errors.push(e.message));
      page.on('response', r => { if (r.status() >= 400) result.http_errors.push(`${r.status()} ${r.request().method()} ${r.url()}`); });
      page.setDefaultTimeout(plan.step_timeout_ms);
    }
    const report = { name: session.name, runs: [] };
    result.sessions.push(report);
    try { await drive(page, session, report); } catch (e) { result.failure_screenshot = await shot(page, 'failure').catch(() => null); throw e; }
  }
});

function record(page) {
  page.on('console', m => { if (m.type() === 'error' || process.env.STROKELABEL_DRIVER_DEBUG) result.console.push(`${m.type()}: ${m.text().slice(0, 500)}`); });
  page.on('response', async r => {  // what the page asked the server and what it answered (recorded, not changed)
    const u = new URL(r.url());
    if (!/^\/(info|infer|train|activelearning|datastore|auth)\//.test(u.pathname) && !u.pathname.startsWith('/ohif3/strokelabel/')) return;
    const entry = { method: r.request().method(), path: u.pathname, query: u.search, status: r.status() };
    result.requests.push(entry);
    if (u.pathname.startsWith('/infer/') || (u.pathname.startsWith('/train/') && entry.method === 'POST')) entry.answer = await r.json().catch(() => null);
  });
}

// The study on screen and the StrokeLabel panel drawn (after the login page, when the server sends the browser there).
async function studyShown(page, session, report) {
  if (new URL(page.url()).pathname === '/login') {
    report.login_page = page.url();
    await page.locator('input[name="username"]').fill(session.login.username);
    await page.locator('input[name="password"]').fill(session.login.password);
    await Promise.all([page.waitForURL(u => u.pathname.startsWith('/ohif3/')), page.locator('button[type="submit"]').click()]);
    report.landed = page.url();
    step(`${session.name}_logged_in`);
  }
  await page.waitForFunction(() => (window.cornerstone?.getEnabledElements() ?? []).some(e => (e.viewport.getImageIds?.() ?? e.viewport.getActors?.() ?? []).length > 0));
  await page.locator('[data-cy=strokelabel-panel]').waitFor();
  await page.locator('[data-cy=strokelabel-task] option').first().waitFor({ state: 'attached' });
}

async function drive(page, session, report) {
  record(page);
  for (const action of session.actions) {
    if (action.open) {
      // The panel asks who the user is once it is drawn (after the login page, if the server sends the browser there).
      const userKnown = page.waitForResponse(r => new URL(r.url()).pathname === '/auth/token/valid', { timeout: plan.step_timeout_ms * 2 });
      await page.goto(`${plan.server}/ohif3/stroke?StudyInstanceUIDs=${action.open}`, { waitUntil: 'load' });
      await studyShown(page, session, report);
      step(`${session.name}_opened`);
      report.panel = {
        tasks: await page.locator('[data-cy=strokelabel-task] option').evaluateAll(os => os.map(o => o.value)),
        // Read, not changed: which React rendered the panel. The viewer's own root is the only React root in the page.
        react_roots: await page.evaluate(() => [...document.querySelectorAll('*')].filter(e => Object.keys(e).some(k => k.startsWith('__reactContainer$'))).length),
      };
      // The user's role decides whether Retrain is offered: read once the panel has the answer and has drawn it.
      await userKnown;
      await page.evaluate(() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r))));
      report.retrain_offered = await page.locator('[data-cy=strokelabel-retrain]').count() > 0;
      report.opened = await shot(page, `${session.name}_opened`);
    } else if (action.run) {
      report.runs.push(await runTask(page, action.run, session));
    } else if (action.retrain) {
      report.retrain = await retrain(page, action.retrain, session);
    } else if (action.next) {
      const before = page.url();
      await page.locator('[data-cy=strokelabel-next]').click();
      await page.waitForURL(u => u.href !== before, { timeout: plan.step_timeout_ms });
      report.next_study_url = page.url();
      await studyShown(page, session, report);
      report.next_study = await shot(page, `${session.name}_next_study`);
      step(`${session.name}_next_study`);
    }
  }
}

async function runTask(page, run, session) {
  if (run.series_description) {  // the series the task reads, from the study's thumbnails (double-click, as a user)
    await page.getByText(run.series_description, { exact: true }).first().dblclick();
    // Until the active viewport holds that series (what the panel runs the task on) and has drawn it.
    await page.waitForFunction(description => {
      const { viewportGridService, displaySetService } = window.services;
      const state = viewportGridService.getState();
      const shown = (state.viewports.get(state.activeViewportId)?.displaySetInstanceUIDs ?? [])
        .map(uid => displaySetService.getDisplaySetByUID(uid)).find(d => d && d.Modality !== 'SEG');
      if (shown?.SeriesDescription !== description) return false;
      const viewport = window.cornerstone.getEnabledElements().find(e => e.viewportId === state.activeViewportId)?.viewport;
      const imageId = viewport?.getCurrentImageId?.();
      return !!imageId && window.cornerstone.metaData.get('generalSeriesModule', imageId)?.seriesInstanceUID === shown.SeriesInstanceUID
        && (typeof viewport.setImageIdIndex !== 'function' || !!window.cornerstone.cache.getImage(imageId));  // a stack's image loaded
    }, run.series_description, { polling: 100 });
  }
  await page.locator('[data-cy=strokelabel-task]').selectOption(run.task);
  await page.locator('[data-cy=strokelabel-nihss]').fill(run.nihss ?? '');
  await page.locator('[data-cy=strokelabel-onset]').fill(run.onset ?? '');
  const clicked = Date.now();
  await page.locator('[data-cy=strokelabel-run]').click();
  const progress = await page.locator('[data-cy=strokelabel-run]').textContent();
  await page.locator('[data-cy=strokelabel-answer], [data-cy=strokelabel-error]').first().waitFor({ timeout: plan.infer_timeout_ms });
  const report = { task: run.task, progress_text: progress, seconds_to_answer: (Date.now() - clicked) / 1000 };
  // The answer or the error is on the page now: count() looks once, where a short timeout could expire on a loaded machine.
  const errorShown = page.locator('[data-cy=strokelabel-error]');
  report.error = (await errorShown.count()) ? await errorShown.first().textContent() : null;
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
    // The labelmap's voxels per segment of the AI answer's segmentation (read from cornerstone's cache, not changed),
    // and the study's series as the viewer lists them.
    report.labelmap_voxels = await page.evaluate(() => {
      const { segmentationService } = window.services;
      const { cache } = window.cornerstone;
      const ai = segmentationService.getSegmentations().find(s => s.label === 'StrokeLabel original (automatic)');
      const labelmap = ai?.representationData?.Labelmap;
      if (!labelmap) return null;
      const scalars = image => image?.voxelManager?.getScalarData?.() ?? image?.getPixelData?.();
      const arrays = labelmap.imageIds?.length ? labelmap.imageIds.map(id => scalars(cache.getImage(id)))
        : [cache.getVolume(labelmap.volumeId)?.voxelManager?.getCompleteScalarDataArray?.()];
      const counts = {};
      for (const values of arrays) for (let i = 0; i < (values?.length ?? 0); i++) if (values[i]) counts[values[i]] = (counts[values[i]] ?? 0) + 1;
      return Object.fromEntries(Object.values(ai.segments ?? {}).filter(Boolean).map(g => [g.label, counts[g.segmentIndex] ?? 0]));
    });
    report.series_list = await page.evaluate(() => window.services.displaySetService.getActiveDisplaySets().map(d => d.SeriesDescription));
    report.slices = [];
    // The viewport the task ran on is the active one (the series was double-clicked into it).
    const active = await page.evaluate(() => {
      const id = window.services.viewportGridService.getActiveViewportId();
      return { id, index: window.cornerstone.getEnabledElements().findIndex(e => e.viewportId === id) };
    });
    if (run.display_colours) {
      // OHIF's controls over the viewport are blue, as the clot's segment is: the segment is shown in another colour (as
      // a user may choose in OHIF's Segmentation tab) so that its pixels can be told from the controls on a screenshot.
      report.segments = await page.evaluate(({ colours, viewportId }) => {
        const { segmentationService } = window.services;
        const ai = segmentationService.getSegmentations().find(s => s.label === 'StrokeLabel original (automatic)');
        for (const g of Object.values(ai.segments ?? {}).filter(Boolean)) {
          if (colours[g.label]) segmentationService.setSegmentColor(viewportId, ai.segmentationId, g.segmentIndex, colours[g.label]);
        }
        return Object.values(ai.segments ?? {}).filter(Boolean).map(g => ({ segmentation: ai.label, label: g.label, viewports: [viewportId],
          colour: segmentationService.getSegmentColor(viewportId, ai.segmentationId, g.segmentIndex) }));
      }, { colours: run.display_colours, viewportId: active.id });
    }
    const canvas = await page.evaluateHandle(i => window.cornerstone.getEnabledElements()[i].viewport.canvas, active.index);
    for (const z of run.slices_z ?? []) {
      const shown = await showSlice(page, z, plan.z_tolerance_mm, active.index);
      const file = path.join(plan.out_dir, `${session.name}_${run.task}_z${z}.png`);
      await canvas.screenshot({ path: file });
      report.slices.push({ z, file, ...shown });
    }
  }
  report.screenshot = await shot(page, `${session.name}_${run.task}_answer`);
  step(`${session.name}_ran_${run.task}`);
  if (run.save) report.saves = await saveAndCorrect(page, run, session);
  return report;
}

// Retrain with the epochs typed in; the progress as the panel shows it while the run goes on, then its decision.
async function retrain(page, options, session) {
  if (options.task) await page.locator('[data-cy=strokelabel-task]').selectOption(options.task);
  await page.locator('[data-cy=strokelabel-epochs]').fill(String(options.epochs));
  const clicked = Date.now();
  await page.locator('[data-cy=strokelabel-retrain]').click();
  const report = { progress: [] };
  const until = Date.now() + plan.train_timeout_ms;
  for (;;) {
    const said = await page.locator('[data-cy=strokelabel-training]').textContent({ timeout: 100 }).catch(() => null);
    if (said && report.progress.at(-1) !== said) {
      report.progress.push(said);
      if (!report.progress_screenshot && /epoch/.test(said)) report.progress_screenshot = await shot(page, `${session.name}_training`);
    }
    if (await page.locator('[data-cy=strokelabel-decision], [data-cy=strokelabel-train-error]').count()) break;
    if (Date.now() > until) throw new Error(`no training decision in ${plan.train_timeout_ms} ms; the panel said ${report.progress.at(-1)}`);
    await page.waitForTimeout(500);
  }
  report.seconds_to_decision = (Date.now() - clicked) / 1000;
  const trainError = page.locator('[data-cy=strokelabel-train-error]');
  report.error = (await trainError.count()) ? await trainError.first().textContent() : null;
  if (!report.error) {
    report.decision = Object.fromEntries(await page.locator('[data-cy=strokelabel-decision] > div').evaluateAll(rows => rows.map(r => [r.dataset.cy, r.children[1]?.textContent ?? r.textContent])));
  }
  report.screenshot = await shot(page, `${session.name}_retrained`);
  step(`${session.name}_retrained`);
  return report;
}

// Save the answer unedited (approved), then paint a brush stroke and save again (corrected); each save's STOW-RS
// answer and what the panel said.
async function saveAndCorrect(page, run, session) {
  const saves = [];
  const save = async name => {
    const label = await page.locator('[data-cy=strokelabel-save]').textContent();
    const stow = page.waitForResponse(r => r.request().method() === 'POST' && r.url().includes('/proxy/dicom/'), { timeout: plan.step_timeout_ms });
    await page.locator('[data-cy=strokelabel-save]').click();
    const answer = await stow;
    await page.locator('[data-cy=strokelabel-saved], [data-cy=strokelabel-error]').first().waitFor();
    await page.waitForTimeout(500);
    const said = await page.locator('[data-cy=strokelabel-saved], [data-cy=strokelabel-error]').first().textContent();
    saves.push({ name, button: label, stow_status: answer.status(), said, screenshot: await shot(page, `${session.name}_saved_${name}`) });
    step(`${session.name}_saved_${name}`);
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
  saves.painted_file = await shot(page, `${session.name}_painted`);
  await page.locator('[data-cy=strokelabel-btn]').click();
  await save('painted');
  return saves;
}
