// Drives Debian's chromium with playwright-core through the SMART flows of the browser test.
//
// Usage: node ehr_launch.mjs '<json config>'   (tests/smart/test_smart_clients.py builds the config)
// Config: chromium, screenshots (folder), launchUrl, pickerUrl, username, password, patientQuery,
//         patientId, timeoutMs. Prints one JSON object with what the pages showed.
import { launch } from "./chromium.mjs";

const config = JSON.parse(process.argv[2]);
const timeout = config.timeoutMs || 30000;
const shot = (page, name) => page.screenshot({ path: `${config.screenshots}/${name}.png`, fullPage: true });

const browser = await launch(config);
const result = { console: [], requests: [] };
try {
  // --- EHR launch: app launch URL -> login -> consent -> app reads studies and a frame --------
  const context = await browser.newContext({ viewport: { width: 900, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(timeout);
  page.on("console", (m) => result.console.push(`${m.type()}: ${m.text()}`));
  page.on("request", (r) => result.requests.push(`${r.method()} ${r.url().split("?")[0]}`));
  await page.goto(config.launchUrl);
  await page.waitForSelector("#username");
  result.loginTitle = await page.title();
  await shot(page, "01-login");
  await page.fill("#username", config.username);
  await page.fill("#password", config.password);
  await page.click("button[type=submit]");
  await page.waitForSelector("button[name=decision][value=approve]");
  result.consentTitle = await page.title();
  result.consentText = await page.innerText("main");
  await shot(page, "02-consent-ehr-launch");
  await page.click("button[name=decision][value=approve]");
  await page.waitForFunction(() => {
    const s = document.getElementById("status");
    return s && (s.textContent === "done" || s.textContent === "error");
  });
  result.app = await page.evaluate(() => Object.fromEntries(
    ["status", "patient", "patient-name", "study", "endpoint", "frame-url", "frame-status", "frame-bytes",
     "response-bytes", "error"].map((id) => [id, document.getElementById(id).textContent])));
  result.appUrl = page.url().split("?")[0];
  await shot(page, "03-app");
  await context.close();

  // --- standalone launch of a practitioner: the patient picker ------------------------------
  if (config.pickerUrl) {
    const picker = await browser.newContext({ viewport: { width: 900, height: 800 } });
    const p = await picker.newPage();
    p.setDefaultTimeout(timeout);
    await p.goto(config.pickerUrl);
    await p.fill("#username", config.username);
    await p.fill("#password", config.password);
    await p.click("button[type=submit]");
    await p.waitForSelector("#patient_query");
    await shot(p, "04-consent-picker");
    result.pickerInitial = await p.$$eval("ul.patients input[type=radio]", (els) => els.map((e) => e.value));
    await p.fill("#patient_query", config.patientQuery);
    await p.press("#patient_query", "Enter");  // implicit submission: the Search button
    await p.waitForSelector(`ul.patients input[value="${config.patientId}"]`);
    result.pickerFound = await p.$$eval("ul.patients input[type=radio]", (els) => els.map((e) => e.value));
    result.pickerQuery = await p.inputValue("#patient_query");
    await p.check(`ul.patients input[value="${config.patientId}"]`);
    await shot(p, "05-consent-picker-search");
    await p.click("button[name=decision][value=approve]");
    await p.waitForSelector("#query:not(:empty)");
    result.pickerRedirect = p.url();
    await picker.close();
  }
} catch (error) {
  result.failure = String((error && error.stack) || error);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(result));
