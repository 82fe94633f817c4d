// StrokeLabel's extension for the prebuilt OHIF 3.13.2 at /ohif3/ (no OHIF rebuild).
//
// How it gets into the viewer (facts of the 3.13.2 bundle, checked by tests/e2e/test_browser_stroke.py):
// - OHIF's module loader (`loadModule` in dist/app.bundle.*.js) passes any entry of `window.config.extensions`
//   or `.modes` that is not one of its built-in names to `window.browserImportFunction`, which is the
//   browser's native `import()`: this file is imported as an ES module and its default export is the extension.
// - A panel is a React component that OHIF renders with its own React. React 18.3.1 is not on `window` and
//   `peerImport('react')` (the same loader) imports the URL "react", which fails. The viewer's React is
//   module "react" of its rspack bundle: a chunk pushed onto `globalThis.rspackChunk` with a runtime
//   callback receives the bundle's `__webpack_require__`, whose module table holds it. Taking it from there
//   gives the one React instance that renders OHIF (hooks work); a copy of React here would break them.
// Everything the panel asks of the server goes through the server's own routes (same origin, the login
// cookie): /info/, /infer/<task>; the answer comes back into the viewer as the AI DICOM-SEG the server
// stored in the PACS, loaded by OHIF's own SEG loader, so it is an ordinary editable OHIF segmentation.

export const EXTENSION_ID = '@strokelabel/ohif-extension';
export const PANEL_ID = `${EXTENSION_ID}.panelModule.strokelabel`;

// ---- the viewer's own React ---------------------------------------------------------------------------
let viewerReact = null;

export function reactOfTheViewer() {
  if (viewerReact) return viewerReact;
  const chunks = globalThis.rspackChunk;
  if (!chunks || typeof chunks.push !== 'function') throw new Error('OHIF bundle runtime not found (globalThis.rspackChunk)');
  let bundleRequire = null;
  chunks.push([[`strokelabel-react-${Date.now()}`], {}, require => { bundleRequire = require; }]);
  if (!bundleRequire) throw new Error('the OHIF bundle runtime did not hand over its module loader');
  // React's own module: the one that defines the hooks and says it is React 18 (react-dom's module defines
  // neither useState nor React's version string); exactly one must match, else refuse rather than guess.
  const ids = Object.keys(bundleRequire.m).filter(id => {
    const source = Function.prototype.toString.call(bundleRequire.m[id]);
    return source.includes('exports.useState=') && source.includes('exports.version="18.');
  });
  if (ids.length !== 1) throw new Error(`expected one React module in the OHIF bundle, found ${ids.length}`);
  viewerReact = bundleRequire(ids[0]);
  return viewerReact;
}

// ---- talking to the server ------------------------------------------------------------------------------
export async function serverReason(response) {
  // The server's 4xx carries its reason in `detail` (FastAPI); say that, not "Failed".
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    const detail = body.detail ?? body.message ?? body.error ?? text;
    return `${response.status}: ${typeof detail === 'string' ? detail : JSON.stringify(detail)}`;
  } catch {
    return `${response.status}: ${text.slice(0, 300) || response.statusText}`;
  }
}

async function getJson(url) {
  const response = await fetch(url, { credentials: 'same-origin' });
  if (!response.ok) throw new Error(await serverReason(response));
  return response.json();
}

export async function runTask(task, seriesUID, options) {
  const params = { result_extension: '.nii.gz' };
  if (options.nihss !== '') params.nihss = options.nihss;
  if (options.onset !== '') params.onset_to_imaging_min = options.onset;
  if (options.method) params.method = options.method;
  const form = new FormData();
  form.append('params', JSON.stringify(params));
  const url = `/infer/${encodeURIComponent(task)}?image=${encodeURIComponent(seriesUID)}&output=json`;
  const response = await fetch(url, { method: 'POST', body: form, credentials: 'same-origin' });
  if (!response.ok) throw new Error(await serverReason(response));
  return response.json();
}

// ---- the study on screen and the AI SEG into the viewer --------------------------------------------------
function shownSeries(services) {
  const { viewportGridService, displaySetService } = services;
  const state = viewportGridService.getState();
  const viewport = state.viewports.get(state.activeViewportId) ?? [...state.viewports.values()][0];
  for (const uid of viewport?.displaySetInstanceUIDs ?? []) {
    const displaySet = displaySetService.getDisplaySetByUID(uid);
    if (displaySet && displaySet.Modality !== 'SEG') {
      return { viewportId: viewport.viewportId, StudyInstanceUID: displaySet.StudyInstanceUID, SeriesInstanceUID: displaySet.SeriesInstanceUID, description: displaySet.SeriesDescription };
    }
  }
  return null;
}

async function waitFor(find, timeoutMs, what) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const found = find();
    if (found) return found;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise(r => setTimeout(r, 250));
  }
}

// Loads the AI SEG series the server stored in the PACS as a segmentation of the viewport: OHIF's data source
// fetches that series' metadata (its study cache is dropped first, as OHIF itself does after a store), OHIF
// makes the display set, and OHIF's own hydration turns it into an editable labelmap.
export async function loadSegSeries({ services, commandsManager, extensionManager }, study, seriesUID) {
  const { displaySetService, segmentationService } = services;
  const [dataSource] = extensionManager.getActiveDataSource();
  const find = () => displaySetService.getActiveDisplaySets().find(d => d.SeriesInstanceUID === seriesUID);
  if (!find()) {
    dataSource.deleteStudyMetadataPromise(study.StudyInstanceUID);
    await dataSource.retrieve.series.metadata({ StudyInstanceUID: study.StudyInstanceUID, filters: { seriesInstanceUID: [seriesUID] } });
    dataSource.deleteStudyMetadataPromise(study.StudyInstanceUID);  // a later full load sees the whole study again
  }
  const displaySet = await waitFor(find, 60000, `the AI SEG series ${seriesUID} in the viewer`);
  await commandsManager.runCommand('hydrateSecondaryDisplaySet', { displaySet, viewportId: study.viewportId });
  await waitFor(() => segmentationService.getSegmentation(displaySet.displaySetInstanceUID), 60000, 'the segmentation');
  return displaySet;
}

// ---- the panel --------------------------------------------------------------------------------------------
const TASK_LABELS = { core_penumbra: 'Core / penumbra (CTP)', ischemic_lesion: 'Ischemic lesion (CTP or MRI)', clot_region: 'Clot (multiphase CTA)' };

function figuresOf(params) {
  // Figures carry their unit in the key (volume_ml, mismatch_ratio...): list the numbers and short flags.
  return Object.entries(params).filter(([key, value]) => (typeof value === 'number' && !key.endsWith('_s')) || (key.endsWith('_ml')))
    .map(([key, value]) => [key, typeof value === 'number' ? (Number.isInteger(value) ? String(value) : value.toFixed(2)) : String(value)]);
}

function makePanel(context, React) {
  const h = React.createElement;
  const { useEffect, useState } = React;
  const { services } = context;

  return function StrokeLabelPanel() {
    const [info, setInfo] = useState(null);
    const [task, setTask] = useState('');
    const [nihss, setNihss] = useState('');
    const [onset, setOnset] = useState('');
    const [running, setRunning] = useState(null);  // {task, started_ms}
    const [elapsed, setElapsed] = useState(0);
    const [answer, setAnswer] = useState(null);
    const [error, setError] = useState(null);

    useEffect(() => {
      getJson('/info/').then(body => {
        setInfo(body);
        setTask(t => t || Object.keys(body.models ?? {})[0] || '');
      }, e => setError(`the server's tasks could not be read: ${e.message}`));
    }, []);
    useEffect(() => {
      if (!running) return undefined;
      const timer = setInterval(() => setElapsed(Math.round((Date.now() - running.started_ms) / 1000)), 500);
      return () => clearInterval(timer);
    }, [running]);

    async function run() {
      const study = shownSeries(services);
      if (!study) { setError('no image series on screen: open a study first'); return; }
      setError(null); setAnswer(null); setElapsed(0);
      const started = Date.now();
      setRunning({ task, started_ms: started });
      try {
        const result = await runTask(task, study.SeriesInstanceUID, { nihss, onset });
        const params = result.params ?? {};
        const inferSeconds = (Date.now() - started) / 1000;
        let segmentation = null;
        if (params.ai_seg?.series_uid) {
          await loadSegSeries(context, study, params.ai_seg.series_uid);
          segmentation = params.ai_seg;
        }
        window.strokelabel = { ...(window.strokelabel ?? {}), lastRun: { task, infer_s: inferSeconds, on_screen_s: (Date.now() - started) / 1000, series: study.SeriesInstanceUID } };
        setAnswer({ task, params, segmentation });
      } catch (e) {
        setError(`${TASK_LABELS[task] ?? task} failed: ${e.message}`);
      } finally {
        setRunning(null);
      }
    }

    const models = info?.models ?? {};
    const row = (label, value, cy) => h('div', { className: 'flex justify-between gap-2', 'data-cy': cy }, h('span', { className: 'text-muted-foreground' }, label), h('span', null, value));
    const input = (label, value, set, cy, max) => h('label', { className: 'flex items-center justify-between gap-2' }, label,
      h('input', { type: 'number', min: 0, max, value, 'data-cy': cy, className: 'w-20 rounded bg-input px-1 text-foreground', onChange: e => set(e.target.value) }));

    return h('div', { className: 'flex flex-col gap-2 p-2 text-sm text-foreground', 'data-cy': 'strokelabel-panel' },
      h('div', { className: 'font-semibold' }, 'StrokeLabel'),
      info === null && !error ? h('div', null, 'Reading the server\u2019s tasks\u2026') : null,
      Object.keys(models).length ? h('select', { value: task, 'data-cy': 'strokelabel-task', className: 'rounded bg-input p-1 text-foreground', onChange: e => setTask(e.target.value) },
        Object.keys(models).map(name => h('option', { key: name, value: name }, TASK_LABELS[name] ?? name))) : null,
      input('NIHSS (0\u201342)', nihss, setNihss, 'strokelabel-nihss', 42),
      input('Onset to imaging (min)', onset, setOnset, 'strokelabel-onset', 20160),
      h('button', { type: 'button', disabled: !task || !!running, 'data-cy': 'strokelabel-run', className: 'rounded bg-primary px-2 py-1 text-primary-foreground disabled:opacity-50', onClick: run },
        running ? `Running ${TASK_LABELS[running.task] ?? running.task}\u2026 ${elapsed} s` : 'Run on the series on screen'),
      error ? h('div', { role: 'alert', 'data-cy': 'strokelabel-error', className: 'text-red-400' }, error) : null,
      answer ? h('div', { 'data-cy': 'strokelabel-answer', className: 'flex flex-col gap-1 border-t border-input pt-2' },
        row('Method', `${answer.params.method ?? '?'}${answer.params.method_reason ? ` (${answer.params.method_reason})` : ''}`, 'strokelabel-method'),
        row('Guard', answer.params.quality ? (answer.params.quality.passed ? 'passed' : 'refused') : 'none', 'strokelabel-guard'),
        answer.params.review ? row('Review', answer.params.review_reason ?? 'yes', 'strokelabel-review') : row('Review', 'not needed', 'strokelabel-review'),
        ...figuresOf(answer.params).map(([key, value]) => row(key, value, `strokelabel-figure-${key}`)),
        answer.segmentation ? row('Segmentation', 'loaded (editable)', 'strokelabel-segmentation') : row('Segmentation', 'empty answer: nothing to draw', 'strokelabel-segmentation')) : null);
  };
}

// ---- the extension ----------------------------------------------------------------------------------------
const extension = {
  id: EXTENSION_ID,
  getPanelModule(context) {
    const { servicesManager, commandsManager, extensionManager } = context;
    const React = reactOfTheViewer();
    const panel = makePanel({ services: servicesManager.services, commandsManager, extensionManager }, React);
    return [{ name: 'strokelabel', iconName: 'tab-segmentation', iconLabel: 'StrokeLabel', label: 'StrokeLabel', component: panel }];
  },
};

export default extension;
