// Drives Debian's chromium with playwright-core through OHIF signing in at the facade (issue 14).
//
// Usage: node ohif_viewer.mjs '<json config>'   (tests/test_viewer_browser.py builds the config)
// Config: chromium, screenshots (folder), username, password, timeoutMs, viewers: a list of
//   {name, studyUrl, logoutUrl, postLogoutUrl, facade}: the viewer's URL for one study, its
//   logout route, the post-logout URI it registered, and the facade's base URL.
// For each viewer, in one browser: open the study (login, consent), wait until the viewport's
// canvas shows an image, reload, open the study in a new tab, log out, visit again. Prints one
// JSON object per viewer with what happened; the test judges it.
import { canvasValues, launch } from "./chromium.mjs";

const config = JSON.parse(process.argv[2]);
const timeout = config.timeoutMs || 60000;

const browser = await launch(config);


async function waitForImage(page) {
  const handle = await page.waitForFunction(canvasValues, 16, { timeout, polling: 250 });
  return await handle.jsonValue();
}

async function runViewer(viewer) {
  const out = { name: viewer.name, console: [], failed: [], navigations: [], consentPages: 0, loginPages: 0, steps: [] };
  const context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
  const shot = (page, step) => page.screenshot({ path: `${config.screenshots}/viewer-${viewer.name}-${step}.png` });
  const watch = (page) => {
    page.setDefaultTimeout(timeout);
    page.on("console", (m) => { if (m.type() === "error") out.console.push(m.text().slice(0, 300)); });
    page.on("response", (r) => { if (r.status() >= 400) out.failed.push(`${r.status()} ${r.url().slice(0, 200)}`); });
    page.on("framenavigated", (frame) => { if (frame === page.mainFrame()) out.navigations.push(frame.url()); });
    page.on("load", async () => {
      try {
        if (await page.$("button[name=decision][value=approve]")) out.consentPages += 1;
        else if (await page.$("#username")) out.loginPages += 1;
      } catch { /* the page navigated on */ }
    });
  };
  const page = await context.newPage();
  watch(page);
  try {
    const started = Date.now();
    // 1. First visit: the viewer sends the browser to the facade's login, then consent.
    await page.goto(viewer.studyUrl);
    await page.waitForSelector("#username");
    out.loginUrl = page.url();
    await page.fill("#username", config.username);
    await page.fill("#password", config.password);
    await page.click("button[type=submit]");
    await page.waitForSelector("button[name=decision][value=approve]");
    out.consentText = await page.innerText("main");
    await page.click("button[name=decision][value=approve]");
    out.firstValues = await waitForImage(page);
    out.firstUrl = page.url();
    out.firstSeconds = (Date.now() - started) / 1000;
    await shot(page, "1-study");
    out.steps.push("study");

    // 2. Reload: the viewer comes back without the consent page.
    const consentBefore = out.consentPages;
    await page.reload();
    out.reloadValues = await waitForImage(page);
    out.reloadConsent = out.consentPages - consentBefore;
    out.steps.push("reload");

    // 3. The study's link pasted in a new tab (no session storage): the facade's login session
    //    and remembered consent send it straight back.
    const tab = await context.newPage();
    watch(tab);
    await tab.goto(viewer.studyUrl);
    out.tabValues = await waitForImage(tab);
    out.tabConsent = out.consentPages - consentBefore;
    out.tabLogin = out.loginPages - 1;
    out.steps.push("new-tab");
    await tab.close();

    // 4. Logout: through the facade's end_session_endpoint back to the post-logout URI; the
    //    next visit asks for the login again.
    const navigationsBefore = out.navigations.length;
    // The end-session request's parameter names (never their values: the id_token_hint is a token).
    page.on("request", (r) => {
      const url = new URL(r.url());
      if (url.origin + url.pathname === `${viewer.facade}/auth/logout`) out.logoutParams = [...url.searchParams.keys()].sort();
    });
    const reached = new Promise((resolve) => {
      const check = (frame) => {
        if (frame === page.mainFrame() && frame.url().split("?")[0] === viewer.postLogoutUrl) resolve(frame.url());
      };
      page.on("response", (r) => { if (r.status() >= 400) out.failed.push(`${r.status()} ${r.url().slice(0, 200)}`); });
    page.on("framenavigated", check);
    });
    await page.goto(viewer.logoutUrl);
    out.postLogout = await Promise.race([reached, page.waitForTimeout(timeout).then(() => null)]);
    out.afterLogout = out.navigations.slice(navigationsBefore);
    out.signOutAsked = (await page.content()).includes("Sign out?");
    out.steps.push("logout");
    await page.goto(viewer.studyUrl);
    await page.waitForSelector("#username");
    out.nextVisitLogin = page.url();
    await shot(page, "2-login-again");
    out.steps.push("login-again");
  } catch (error) {
    out.failure = String((error && error.stack) || error);
    try { await shot(page, "failure"); } catch { /* closed */ }
    out.failureUrl = page.url();
  } finally {
    await context.close();
  }
  return out;
}

const results = [];
try {
  for (const viewer of config.viewers) results.push(await runViewer(viewer));
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(results));
