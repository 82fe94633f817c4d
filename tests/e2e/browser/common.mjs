// What the browser tests' drivers share: headless Debian chromium (driven by playwright-core from the
// viewer folder), a page that records the errors it meets, and a slice shown by its z position with
// where the patient's left lands on screen.
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import path from 'node:path';

export function readPlan() {
  return JSON.parse(readFileSync(process.argv[2], 'utf8'));
}

// Runs body(page, browser) in a fresh headless chromium (browser.newPage() opens another context: another login); prints the result as one JSON line (errors in it, never thrown).
export async function runInBrowser(plan, result, body) {
  const require = createRequire(path.join(plan.viewer_dir, 'package.json'));
  const { chromium } = require('playwright-core');
  Object.assign(result, { page_errors: [], http_errors: [] });
  const browser = await chromium.launch({
    executablePath: plan.chromium,
    // No GPU here: WebGL through SwiftShader (cornerstone renders with it; slow but exact).
    args: ['--no-sandbox', '--use-gl=angle', '--use-angle=swiftshader', '--enable-unsafe-swiftshader', '--ignore-gpu-blocklist'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: plan.width ?? 1400, height: plan.height ?? 900 } });
    page.on('pageerror', e => result.page_errors.push(e.message));
    page.on('response', r => { if (r.status() >= 400) result.http_errors.push(`${r.status()} ${r.request().method()} ${r.url()}`); });
    page.setDefaultTimeout(plan.step_timeout_ms);
    await body(page, browser);
  } catch (e) {
    result.error = String(e.stack || e);
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(result));
}

// Shows the slice at z (DICOM LPS mm) in the first viewport, stack or volume, and reports where the
// patient's left lands on screen (from the renderer and from OHIF's orientation marker).
export async function showSlice(page, z, tolerance, viewportIndex = 0) {
  return page.evaluate(async ({ z, tolerance, viewportIndex }) => {
    const { getEnabledElements, metaData } = window.cornerstone;
    const viewport = getEnabledElements()[viewportIndex].viewport;
    const zOf = id => metaData.get('imagePlaneModule', id).imagePositionPatient[2];
    // The labelmap is drawn after the image: wait for cornerstone's own events that say both were drawn for this
    // viewport (IMAGE_RENDERED on its element, then SEGMENTATION_RENDERED), each at most 800 ms (a slice without
    // a segmentation may not announce one), then two frames for the canvas to be composited.
    const waited = Date.now();
    const segmentationRendered = 'CORNERSTONE_TOOLS_SEGMENTATION_RENDERED';
    const event = (target, name, accept) => new Promise(resolve => {
      const listener = e => { if (accept(e)) { target.removeEventListener(name, listener); resolve(true); } };
      target.addEventListener(name, listener);
      setTimeout(() => { target.removeEventListener(name, listener); resolve(false); }, 800);
    });
    // (listening from before the move: the move itself draws)
    const imageDrawn = event(viewport.element, 'CORNERSTONE_IMAGE_RENDERED', () => true);
    const labelmapDrawn = event(window.cornerstone.eventTarget, segmentationRendered, e => e.detail?.viewportId === viewport.id);
    let index;
    if (typeof viewport.setImageIdIndex === 'function') {  // a stack
      index = viewport.getImageIds().findIndex(id => Math.abs(zOf(id) - z) < tolerance);
      if (index < 0) return { error: `no image at z=${z}` };
      await viewport.setImageIdIndex(index);
    } else {  // a volume: move the camera along its normal to z
      const camera = viewport.getCamera();
      const { focalPoint, position, viewPlaneNormal } = camera;
      if (Math.abs(Math.abs(viewPlaneNormal[2]) - 1) > 1e-3) return { error: `viewport ${viewportIndex} is not axial: normal ${viewPlaneNormal}` };
      const dz = z - focalPoint[2];
      viewport.setCamera({ focalPoint: [focalPoint[0], focalPoint[1], z], position: [position[0], position[1], position[2] + dz] });
      index = viewport.getSliceIndex?.() ?? null;
    }
    viewport.render();
    const drawn = { image: await imageDrawn, labelmap: await labelmapDrawn };
    await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
    drawn.waited_ms = Date.now() - waited;
    const focal = viewport.getCamera().focalPoint;
    const centre = viewport.worldToCanvas(focal);
    const towardsLeft = viewport.worldToCanvas([focal[0] + 50, focal[1], focal[2]]);  // DICOM LPS: +x is the patient's left
    const element = viewport.element.closest('[data-viewportid]') ?? document;
    const marker = element.querySelector('.left-mid.orientation-marker .orientation-marker-value')?.textContent ?? null;
    return { index, drawn, focal_z: focal[2], patient_left_on_screen: towardsLeft[0] < centre[0] ? 'left' : 'right', left_marker: marker };
  }, { z, tolerance, viewportIndex });
}

// One brush stroke by real mouse moves: from a patient point (DICOM LPS) 8 steps of stepPx to the right on
// the viewport's canvas (a locator or handle). Returns where it ran on the page.
export async function brushStroke(page, canvas, pointLps, stepPx, viewportIndex = 0) {
  const at = await page.evaluate(({ point, index }) => window.cornerstone.getEnabledElements()[index].viewport.worldToCanvas(point),
    { point: pointLps, index: viewportIndex });
  const box = await canvas.boundingBox();
  const scale = box.width / await canvas.evaluate(c => c.clientWidth);  // canvas CSS pixels -> page pixels
  const [x0, y0] = [box.x + at[0] * scale, box.y + at[1] * scale];
  await page.mouse.move(x0, y0);
  await page.mouse.down();
  for (let i = 1; i <= 8; i++) await page.mouse.move(x0 + i * stepPx, y0, { steps: 2 });
  await page.mouse.up();
  return { from_px: [x0, y0], to_px: [x0 + 8 * stepPx, y0] };
}
