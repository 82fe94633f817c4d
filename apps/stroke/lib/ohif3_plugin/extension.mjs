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
      return { viewportId: viewport.viewportId, StudyInstanceUID: displaySet.StudyInstanceUID, SeriesInstanceUID: displaySet.SeriesInstanceUID, description: displaySet.SeriesDescription, modality: displaySet.Modality };
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

// OHIF 3.13.2's DICOMweb source caches a study's metadata under "<source name>:<study UID>" but its
// deleteStudyMetadataPromise deletes the key "<study UID>", which is never there: give it both.
function forgetStudyMetadata(extensionManager, studyUID) {
  const [dataSource] = extensionManager.getActiveDataSource();
  const name = extensionManager.getActiveDataSourceDefinition?.()?.configuration?.name;
  dataSource.deleteStudyMetadataPromise(studyUID);
  if (name) dataSource.deleteStudyMetadataPromise(`${name}:${studyUID}`);
}

// Loads the AI SEG series the server stored in the PACS as a segmentation of the viewport: OHIF's data source
// fetches that series' metadata (its study cache is dropped first, as OHIF itself does after a store), OHIF
// makes the display set, and OHIF's own hydration turns it into an editable labelmap.
export async function loadSegSeries({ services, commandsManager, extensionManager }, study, seriesUID) {
  const { displaySetService, segmentationService } = services;
  const [dataSource] = extensionManager.getActiveDataSource();
  const find = () => displaySetService.getActiveDisplaySets().find(d => d.SeriesInstanceUID === seriesUID);
  if (!find()) {
    forgetStudyMetadata(extensionManager, study.StudyInstanceUID);
    // madeInClient: the series is added to the study on screen without re-running the hanging protocol.
    await dataSource.retrieve.series.metadata({ StudyInstanceUID: study.StudyInstanceUID, filters: { seriesInstanceUID: [seriesUID] }, madeInClient: true });
    forgetStudyMetadata(extensionManager, study.StudyInstanceUID);  // a later full load sees the whole study again
  }
  const displaySet = await waitFor(find, 60000, `the AI SEG series ${seriesUID} in the viewer`);
  // What OHIF's SEG viewport does once its user says "Yes": load the SEG into the segmentation service, then
  // hydrate it into the viewport as an editable labelmap (the clinician asked for it by clicking Run).
  await displaySet.load({ headers: dataSource.getAuthorizationHeader?.() ?? {} });
  // Hydration puts the series the SEG references into the viewport; the labelmap is then shown in it (OHIF's SEG
  // viewport does this from a stored presentation, which a SEG that never was on screen does not have).
  await commandsManager.runCommand('hydrateSecondaryDisplaySet', { displaySet, viewportId: study.viewportId });
  const segmentationId = displaySet.displaySetInstanceUID;
  await waitFor(() => segmentationService.getSegmentation(segmentationId), 60000, 'the segmentation');
  if (!segmentationService.getSegmentationRepresentations(study.viewportId, { segmentationId }).length) {
    await segmentationService.addSegmentationRepresentation(study.viewportId, { segmentationId });
  }
  return displaySet;
}

// ---- whether the answer on screen was edited -------------------------------------------------------------------
// Edited means: the labelmap's voxels differ from the answer as loaded (an edit undone is no edit). A fingerprint
// (count and FNV-1a hash of the labelled voxels' positions and values) of OHIF's labelmap, read from cornerstone's
// cache; OHIF's SEGMENTATION_DATA_MODIFIED events only say when to look again (they also fire while loading).
export function labelmapFingerprint(segmentationService, segmentationId) {
  const labelmap = segmentationService.getSegmentation(segmentationId)?.representationData?.Labelmap;
  if (!labelmap) return null;
  const { cache } = window.cornerstone;
  const scalars = image => image?.voxelManager?.getScalarData?.() ?? image?.getPixelData?.();
  const arrays = labelmap.imageIds?.length
    ? labelmap.imageIds.map(id => scalars(cache.getImage(id)))
    : [cache.getVolume(labelmap.volumeId)?.voxelManager?.getCompleteScalarDataArray?.()];
  let hash = 2166136261;
  let count = 0;
  let offset = 0;
  for (const values of arrays) {
    if (!values) return null;
    for (let i = 0; i < values.length; i++) {
      if (values[i]) {
        count += 1;
        hash = Math.imul(hash ^ (offset + i), 16777619) >>> 0;
        hash = Math.imul(hash ^ values[i], 16777619) >>> 0;
      }
    }
    offset += values.length;
  }
  return `${count}:${hash}`;
}

// ---- the next study, by the task's active-learning strategy -------------------------------------------------
export function strategyOf(task, info) {
  const strategies = Object.keys(info?.strategies ?? {});
  return strategies.find(name => name.startsWith(`${task}_`)) ?? (strategies.includes('random') ? 'random' : strategies[0]);
}

export async function nextStudy(task, info) {
  const strategy = strategyOf(task, info);
  if (!strategy) throw new Error('the server has no active-learning strategy');
  const response = await fetch(`/activelearning/${encodeURIComponent(strategy)}`, {
    method: 'POST', body: '{}', headers: { 'Content-Type': 'application/json' }, credentials: 'same-origin' });
  if (!response.ok) throw new Error(await serverReason(response));
  const chosen = await response.json();
  if (!chosen.study_uid) throw new Error(`${strategy} chose no study (every study may be labelled)`);
  return { strategy, study_uid: chosen.study_uid };
}

// ---- retraining the task's model, for a user whose role allows it -----------------------------------------------
// Who the user is, with their roles: MONAI Label's own GET /auth/token/valid (the login cookie stands for the token;
// with access control off, MONAI Label's stand-in user holds every role). POST /train/<model> requires MONAI Label's
// admin role; the panel offers Retrain only to such a user (the server checks it again: a 403 is shown as any 4xx).
export const TRAINING_ROLE = 'monailabel-admin';  // MONAI Label's default MONAI_LABEL_AUTH_ROLE_ADMIN, which StrokeLabel's realm issues
// A run's options typed in the panel; the rest is the trainer's own defaults (its TaskConfig).
export const TRAIN_EPOCHS = { default: 5, max: 50 };
const TRAINING_STATES = ['SUBMITTED', 'QUEUED', 'RUNNING'];

export function mayTrain(user) {
  return Array.isArray(user?.roles) && user.roles.includes(TRAINING_ROLE);
}

// The model the task trains for the series on screen: a task may have one model per input route
// (ischemic_lesion_ctp and ischemic_lesion_mri); the modality on screen picks the route.
export function modelToTrain(task, info, modality) {
  const models = Object.keys(info?.models?.[task]?.versions_in_use ?? {});
  if (models.length <= 1) return models[0] ?? null;
  const route = modality === 'MR' ? 'mri' : 'ctp';
  return models.find(name => name.endsWith(`_${route}`)) ?? null;
}

export async function startTraining(model, epochs) {
  const response = await fetch(`/train/${encodeURIComponent(model)}`, {
    method: 'POST', body: JSON.stringify({ max_epochs: epochs }), headers: { 'Content-Type': 'application/json' }, credentials: 'same-origin' });
  if (!response.ok) throw new Error(await serverReason(response));
  return response.json();
}

// What the trainer's log says so far: the last epoch line (MONAI's StatsHandler: "Epoch: 2/5, Iter: 1/4 -- train_loss: ...")
// and the last validation Dice ("Epoch[2] Metrics -- val_mean_dice: 0.4321"), from the last lines MONAI Label keeps of the
// run's output.
export function trainingProgress(lines) {
  let epoch = null;
  let dice = null;
  for (const line of lines ?? []) {
    const e = /Epoch: (\d+)\/(\d+)/.exec(line);  // the iteration lines; "Epoch[1] Complete" names no total
    if (e) epoch = `${e[1]}/${e[2]}`;
    const d = /val_mean_dice\D{0,20}?(\d+\.\d+)/.exec(line);
    if (d) dice = Number(d[1]);
  }
  return { epoch, dice };
}

// Polls MONAI Label's GET /train/ (the latest run: status and its log's last lines) until the run ends; the publish
// decision is then the model's train stats in /info/ (lib/trainers/stroke_train.py: version, published, reason, Dice).
export async function followTraining(model, previousVersion, onProgress, pollMs = 2000) {
  for (;;) {
    await new Promise(r => setTimeout(r, pollMs));
    const run = await getJson('/train/');
    onProgress({ status: run.status, ...trainingProgress(run.details) });
    if (TRAINING_STATES.includes(run.status)) continue;
    if (run.status !== 'DONE') {
      const last = (run.details ?? []).filter(line => line.trim()).slice(-1)[0] ?? '';
      throw new Error(`the training ended ${run.status}${last ? `: ${last.slice(0, 300)}` : ''}`);
    }
    const stats = (await getJson('/info/')).train_stats?.[model] ?? {};
    if (!stats.version || stats.version === previousVersion) throw new Error(`${model}'s training made no new version (see the server log)`);
    return stats;
  }
}

// ---- saving the label, with its provenance --------------------------------------------------------------------
// One vocabulary everywhere (README, datastore, SEG, trainers): AI (the answer as computed, never trains),
// approved (saved by a person without an edit), corrected (edited by a person). OHIF marks every segment it
// exports MANUAL; the extension knows whether the user edited, and says which in the SEG it stores: ContentLabel
// APPROVED or CORRECTED (the server reads it; a SEG without it, exported by hand, counts as corrected).
export const PROVENANCE_LABELS = { approved: 'APPROVED', corrected: 'CORRECTED' };

export async function saveSegmentation({ commandsManager, extensionManager }, segmentationId, provenance) {
  const [dataSource] = extensionManager.getActiveDataSource();
  const sourceName = extensionManager.activeDataSourceName;
  const generated = await commandsManager.runCommand('generateSegmentation', {
    segmentationId, options: { dataSource: sourceName, SeriesDescription: `StrokeLabel ${provenance}`, SeriesNumber: 310 } });
  const dataset = generated?.dataset;
  if (!dataset) throw new Error('OHIF could not make a DICOM SEG of the segmentation');
  dataset.ContentLabel = PROVENANCE_LABELS[provenance];
  dataset.ContentDescription = provenance === 'approved' ? 'StrokeLabel answer approved unedited' : 'StrokeLabel answer corrected by a person';
  if (dataset.StudyID === 'No Study ID') dataset.StudyID = '';  // as OHIF's own store does
  try {
    await dataSource.store.dicom(dataset);
  } catch (e) {
    // The proxy's 4xx (e.g. 403 for a reader): its reason. OHIF's DICOMweb client (dicomweb-client) rejects with an
    // Error("request failed") carrying the XMLHttpRequest (`request`), its `status` and its `response` body.
    const xhr = e?.request;
    const status = e?.status ?? xhr?.status;
    let body = e?.response ?? xhr?.response;
    if (body instanceof ArrayBuffer) body = new TextDecoder().decode(body);
    let reason = typeof body === 'string' && body ? body : body && typeof body === 'object' ? (body.detail ?? JSON.stringify(body)) : e?.message;
    try { reason = JSON.parse(reason).detail ?? reason; } catch { /* plain text */ }
    throw new Error(`${status ? `${status}: ` : ''}${reason || 'the PACS did not store the SEG'}`);
  }
  forgetStudyMetadata(extensionManager, dataset.StudyInstanceUID);
  return { series_uid: dataset.SeriesInstanceUID, instance_uid: dataset.SOPInstanceUID, provenance };
}

// ---- the panel --------------------------------------------------------------------------------------------
const TASK_LABELS = { core_penumbra: 'Core / penumbra (CTP)', ischemic_lesion: 'Ischemic lesion (CTP or MRI)', clot_region: 'Clot (multiphase CTA)' };

function figuresOf(params) {
  // The result's figures carry their unit in the key (lesion_volume_ml, mismatch_ratio, volumes_ml.core): the
  // numbers, and the numbers of one level of nesting named "<key>.<name>".
  const shown = value => (Number.isInteger(value) ? String(value) : value.toFixed(2));
  // Not figures: timings (a stored answer's too), the label numbering, the guard (shown as its verdict), where the SEG is.
  const notFigures = new Set(['latencies', 'computed_latencies', 'label_names', 'quality', 'ai_seg', 'input_notes', 'centroids']);
  return Object.entries(params).flatMap(([key, value]) => {
    if (notFigures.has(key)) return [];
    if (typeof value === 'number') return [[key, shown(value)]];
    if (value && typeof value === 'object' && !Array.isArray(value))
      return Object.entries(value).filter(([, v]) => typeof v === 'number').map(([name, v]) => [`${key}.${name}`, shown(v)]);
    return [];
  });
}

function makePanel(context, React) {
  const h = React.createElement;
  const { useEffect, useState } = React;
  const { services } = context;
  // OHIF unmounts a side panel whose tab is not shown (the clinician opens the Segmentation tab to paint): the
  // panel's state lives here, beside the component, so the answer and whether it was edited outlive the tab.
  // Every mounted copy of the panel re-renders when it changes (React's useSyncExternalStore).
  const kept = {};
  const listeners = new Set();
  let version = 0;
  const keep = (key, next) => {
    kept[key] = typeof next === 'function' ? next(kept[key]) : next;
    version += 1;
    listeners.forEach(listener => listener());
  };
  const subscribe = listener => { listeners.add(listener); return () => listeners.delete(listener); };
  const useKept = (key, initial) => {
    if (!(key in kept)) kept[key] = initial;
    React.useSyncExternalStore(subscribe, () => version);
    return [kept[key], next => keep(key, next)];
  };

  return function StrokeLabelPanel() {
    const [info, setInfo] = useKept('info', null);
    const [task, setTask] = useKept('task', '');
    const [nihss, setNihss] = useKept('nihss', '');
    const [onset, setOnset] = useKept('onset', '');
    const [running, setRunning] = useKept('running', null);  // {task, started_ms}
    const [elapsed, setElapsed] = useState(0);
    const [answer, setAnswer] = useKept('answer', null);
    const [error, setError] = useKept('error', null);
    const [edited, setEdited] = useKept('edited', false);
    const [saving, setSaving] = useKept('saving', false);
    const [saved, setSaved] = useKept('saved', null);
    const [user, setUser] = useKept('user', null);
    const [epochs, setEpochs] = useKept('epochs', String(TRAIN_EPOCHS.default));
    const [training, setTraining] = useKept('training', null);  // {model, status, epoch, dice}
    const [decision, setDecision] = useKept('decision', null);  // the trainer's stats: version, published, reason, Dice
    const [trainError, setTrainError] = useKept('trainError', null);

    useEffect(() => {
      getJson('/info/').then(body => {
        setInfo(body);
        setTask(t => t || Object.keys(body.models ?? {})[0] || '');
      }, e => setError(`the server's tasks could not be read: ${e.message}`));
      // Who is logged in decides whether Retrain is offered; unknown (an old server): not offered.
      getJson('/auth/token/valid').then(setUser, () => setUser({ roles: [] }));
    }, []);
    // Whether the user edited the answer since it was loaded (brush, eraser, threshold...), looked at again whenever
    // OHIF says the labelmap changed, whether this tab is shown or not (painting happens in the Segmentation tab).
    function watchEdits(segmentationId) {
      const { segmentationService } = services;
      const original = labelmapFingerprint(segmentationService, segmentationId);
      kept.unwatch?.();
      kept.unwatch = segmentationService.subscribe(segmentationService.EVENTS.SEGMENTATION_DATA_MODIFIED, event => {
        if (event?.segmentationId === segmentationId) keep('edited', labelmapFingerprint(segmentationService, segmentationId) !== original);
      }).unsubscribe;
      kept.isEdited = () => labelmapFingerprint(segmentationService, segmentationId) !== original;
    }
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
        const params = await runTask(task, study.SeriesInstanceUID, { nihss, onset });  // output=json: the result's figures
        const inferSeconds = (Date.now() - started) / 1000;
        let segmentation = null;
        let segmentationId = null;
        if (params.ai_seg?.series_uid) {
          segmentationId = (await loadSegSeries(context, study, params.ai_seg.series_uid)).displaySetInstanceUID;
          segmentation = params.ai_seg;
        }
        window.strokelabel = { ...(window.strokelabel ?? {}), lastRun: { task, infer_s: inferSeconds, on_screen_s: (Date.now() - started) / 1000, series: study.SeriesInstanceUID } };
        setEdited(false); setSaved(null);
        if (segmentationId) watchEdits(segmentationId);
        setAnswer({ task, params, segmentation, segmentationId });
        // OHIF's segmentation mode turns to its Segmentation tab when a segmentation is added: back to the answer.
        setTimeout(() => services.panelService.activatePanel(PANEL_ID, true), 300);
      } catch (e) {
        setError(`${TASK_LABELS[task] ?? task} failed: ${e.message}`);
      } finally {
        setRunning(null);
      }
    }

    async function save() {
      const changed = kept.isEdited ? kept.isEdited() : edited;  // the voxels now, not only the last event
      setEdited(changed);
      const provenance = changed ? 'corrected' : 'approved';
      setError(null); setSaving(true);
      try {
        setSaved(await saveSegmentation(context, answer.segmentationId, provenance));
      } catch (e) {
        setError(`The label was not saved: ${e.message}`);
      } finally {
        setSaving(false);
      }
    }

    async function retrain() {
      const model = modelToTrain(task, info, shownSeries(services)?.modality);
      if (!model) { setTrainError(`${TASK_LABELS[task] ?? task}: no model to train for the series on screen`); return; }
      const count = Number(epochs);
      if (!Number.isInteger(count) || count < 1 || count > TRAIN_EPOCHS.max) { setTrainError(`Epochs: a whole number from 1 to ${TRAIN_EPOCHS.max}`); return; }
      setTrainError(null); setDecision(null);
      setTraining({ model, status: 'SUBMITTED', epoch: null, dice: null });
      try {
        const previous = (await getJson('/info/')).train_stats?.[model]?.version ?? null;
        await startTraining(model, count);
        const stats = await followTraining(model, previous, progress => setTraining({ model, ...progress }));
        setDecision({ model, ...stats });
        setInfo(await getJson('/info/'));  // the version in use may have changed
      } catch (e) {
        setTrainError(`Retraining ${model} failed: ${e.message}`);
      } finally {
        setTraining(null);
      }
    }

    async function openNext() {
      setError(null);
      try {
        const { study_uid } = await nextStudy(task, info);
        // A new page for the new study: OHIF loads it as when opened from the study list.
        window.location.assign(`${window.location.pathname}?StudyInstanceUIDs=${encodeURIComponent(study_uid)}`);
      } catch (e) {
        setError(`No next study: ${e.message}`);
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
      h('button', { type: 'button', disabled: !task || !!running, 'data-cy': 'strokelabel-next', className: 'rounded border border-primary px-2 py-1 text-foreground disabled:opacity-50', onClick: openNext,
        title: info ? `the study ${strategyOf(task, info) ?? '?'} picks` : '' }, 'Next study to label'),
      error ? h('div', { role: 'alert', 'data-cy': 'strokelabel-error', className: 'text-red-400' }, error) : null,
      answer ? h('div', { 'data-cy': 'strokelabel-answer', className: 'flex flex-col gap-1 border-t border-input pt-2' },
        row('Method', `${answer.params.method ?? '?'}${answer.params.method_reason ? ` (${answer.params.method_reason})` : ''}`, 'strokelabel-method'),
        row('Guard', answer.params.quality ? (answer.params.quality.passed ? 'passed' : 'refused') : 'none', 'strokelabel-guard'),
        answer.params.review ? row('Review', answer.params.review_reason ?? 'yes', 'strokelabel-review') : row('Review', 'not needed', 'strokelabel-review'),
        answer.params.reused ? row('Answer', `stored, computed ${answer.params.computed_at}`, 'strokelabel-reused') : null,
        ...figuresOf(answer.params).map(([key, value]) => row(key, value, `strokelabel-figure-${key}`)),
        answer.segmentation ? row('Segmentation', 'loaded (editable)', 'strokelabel-segmentation') : row('Segmentation', 'empty answer: nothing to draw', 'strokelabel-segmentation'),
        answer.segmentationId ? h('button', { type: 'button', disabled: saving, 'data-cy': 'strokelabel-save', className: 'mt-1 rounded bg-primary px-2 py-1 text-primary-foreground disabled:opacity-50', onClick: save },
          saving ? 'Saving\u2026' : `Save as training label (${edited ? 'corrected' : 'approved'})`) : null,
        saved ? h('div', { 'data-cy': 'strokelabel-saved' }, `Saved in the PACS as ${saved.provenance}`) : null) : null,
      mayTrain(user) && task ? h('div', { 'data-cy': 'strokelabel-retraining', className: 'flex flex-col gap-1 border-t border-input pt-2' },
        h('div', { className: 'font-semibold' }, 'Retraining'),
        input('Epochs', epochs, setEpochs, 'strokelabel-epochs', TRAIN_EPOCHS.max),
        h('button', { type: 'button', disabled: !!training || !!running, 'data-cy': 'strokelabel-retrain', className: 'rounded border border-primary px-2 py-1 text-foreground disabled:opacity-50', onClick: retrain,
          title: 'train the task\u2019s model on the saved labels; the server publishes it only if it is not worse than the model in use' },
          training ? `Training ${training.model}\u2026` : 'Retrain on the saved labels'),
        training ? h('div', { 'data-cy': 'strokelabel-training' }, `${training.status}${training.epoch ? `, epoch ${training.epoch}` : ''}${training.dice != null ? `, validation Dice ${training.dice.toFixed(3)}` : ''}`) : null,
        trainError ? h('div', { role: 'alert', 'data-cy': 'strokelabel-train-error', className: 'text-red-400' }, trainError) : null,
        decision ? h('div', { 'data-cy': 'strokelabel-decision', className: 'flex flex-col gap-1' },
          row('Decision', decision.published ? `published as ${decision.version}` : `kept aside as ${decision.version}`, 'strokelabel-decision-verdict'),
          row('Candidate Dice', typeof decision.candidate_val_dice === 'number' ? decision.candidate_val_dice.toFixed(3) : '?', 'strokelabel-decision-candidate'),
          row('Model in use Dice', typeof decision.in_use_val_dice === 'number' ? decision.in_use_val_dice.toFixed(3) : 'none', 'strokelabel-decision-in-use'),
          h('div', { 'data-cy': 'strokelabel-decision-reason', className: 'text-muted-foreground' }, decision.reason ?? '')) : null) : null);
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
