// StrokeLabel's mode for the prebuilt OHIF 3.13.2 at /ohif3/stroke: OHIF's own segmentation mode (its tools,
// its editable labelmap panel, its DICOM SEG export) with the StrokeLabel panel as the first right-hand tab.
// OHIF's segmentation mode is built to be extended this way: its `modeFactory` applies immutability-helper
// commands onto its mode instance, and OHIF hands every mode's factory `loadModules`, its own module loader.
import { PANEL_ID } from './extension.mjs';

// OHIF's mode route imports each key of a mode's `extensions` with its module loader: the key is this URL.
const EXTENSION_URL = new URL('./extension.mjs', import.meta.url).pathname;
export const MODE_ID = '@strokelabel/mode-stroke';
export const ROUTE_NAME = 'stroke';

const mode = {
  id: MODE_ID,
  async modeFactory({ modeConfiguration, loadModules }) {
    const [segmentation] = await loadModules(['@ohif/mode-segmentation']);
    const changes = {
      id: { $set: MODE_ID },
      routeName: { $set: ROUTE_NAME },
      displayName: { $set: 'StrokeLabel' },
      extensions: { $merge: { [EXTENSION_URL]: '^1.0.0' } },
      routes: { 0: { layoutInstance: { props: { rightPanels: { $unshift: [PANEL_ID] } } } } },
    };
    const instance = await segmentation.modeFactory.call(segmentation, { modeConfiguration: changes });
    // A site's own `modesConfiguration[MODE_ID]` still applies on top, as for any OHIF mode.
    return modeConfiguration && Object.keys(modeConfiguration).length ? segmentation.modeFactory.call({ modeInstance: instance }, { modeConfiguration }) : instance;
  },
};

export default mode;
