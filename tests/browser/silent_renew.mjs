// OIDC silent renew as browser viewers do it (issue 14): prompt=none in a hidden iframe of the app.
//
// Usage: node silent_renew.mjs '<json config>'   (tests/smart/test_silent_renew_browser.py builds it)
// Config: chromium, hostUrl (the app's page that frames the silent request and reports its answer),
//         loginUrl (an ordinary authorize URL), framedLoginUrl (a page of the app framing that URL),
//         username, password, timeoutMs. Prints one JSON object with what each step saw.
import { launch } from "./chromium.mjs";

const config = JSON.parse(process.argv[2]);
const timeout = config.timeoutMs || 30000;
const browser = await launch(config);

// The answer the hidden iframe reported to the app page (its callback's query string).
async function silentAnswer(page) {
  await page.goto(config.hostUrl);
  await page.waitForFunction(() => window.silentAnswer !== undefined);
  return page.evaluate(() => window.silentAnswer);
}

const result = {};
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(timeout);
  result.withoutSession = await silentAnswer(page);

  // The login page cannot be framed, even by the app's own origin.
  await page.goto(config.framedLoginUrl);
  await page.waitForTimeout(1500);
  const framed = page.frames().find((f) => f !== page.mainFrame());
  result.framedLoginUrl = framed ? framed.url() : null;
  result.framedLoginHasForm = framed ? (await framed.$("#username").catch(() => null)) !== null : false;

  // Sign in and approve once, at the top level as the app's redirect does.
  await page.goto(config.loginUrl);
  await page.fill("#username", config.username);
  await page.fill("#password", config.password);
  await page.click("button[type=submit]");
  await page.waitForSelector("button[name=decision][value=approve]");
  await page.click("button[name=decision][value=approve]");
  await page.waitForURL((url) => url.searchParams.has("code"));

  result.withSessionAndConsent = await silentAnswer(page);
  await context.close();
} catch (error) {
  result.failure = String(error && error.stack || error);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(result));
