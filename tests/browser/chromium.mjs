// What every browser test shares: Debian's Chromium launched headless through playwright-core
// (nothing downloaded), and how a test tells that a viewer's canvas shows an image.
import { chromium } from "playwright-core";

// This machine's network is closed: keep chromium from calling home (flags of the env notes).
export const CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

export function launch(config) {
  return chromium.launch({ executablePath: config.chromium, headless: true, args: CHROMIUM_ARGS });
}

// Distinct colours (up to 256) among the pixels of the viewport canvas showing most of them,
// once there are more than `least` (an image, not a blank or uniform canvas); else 0.
// Runs in the page (page.waitForFunction), so it uses nothing from this module.
export function canvasValues(least) {
  let best = 0;
  for (const canvas of document.querySelectorAll("canvas.cornerstone-canvas, .viewport-element canvas")) {
    if (canvas.width < 64 || canvas.height < 64) continue;
    const context = canvas.getContext("2d", { willReadFrequently: true });
    if (!context) continue;
    const { data } = context.getImageData(0, 0, canvas.width, canvas.height);
    const seen = new Set();
    for (let i = 0; i < data.length && seen.size < 256; i += 4 * 7) seen.add(data[i] | (data[i + 1] << 8) | (data[i + 2] << 16));
    best = Math.max(best, seen.size);
  }
  return best > least ? best : 0;
}
