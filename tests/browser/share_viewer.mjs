// Drives Debian's chromium with playwright-core through a share link (issue 15 "Must show").
//
// Usage: node share_viewer.mjs '<json config>'   (tests/test_share_browser.py builds the config)
// Config: chromium, screenshots, downloads (folders), facade (base URL), username, password,
//   studyUid, pin, timeoutMs.
// 1. The patient logs in on "My images" and creates a link to the study with a PIN.
// 2. A fresh context (the doctor: no account, no cookies) opens the link, enters the PIN,
//    downloads the ZIP, then opens the viewer and waits until its canvas shows an image.
// 3. The patient revokes the link; the doctor's next DICOMweb request (with the token the viewer
//    used) and a reload of the link are answered.
// Prints one JSON object with what happened; the test judges it.
import { canvasValues, launch } from "./chromium.mjs";

const config = JSON.parse(process.argv[2]);
const timeout = config.timeoutMs || 60000;
const browser = await launch(config);


const out = { steps: [], failed: [], console: [] };
const patientContext = await browser.newContext({ viewport: { width: 1200, height: 800 } });
const doctorContext = await browser.newContext({ viewport: { width: 1200, height: 800 }, acceptDownloads: true });
const patient = await patientContext.newPage();
const doctor = await doctorContext.newPage();
for (const page of [patient, doctor]) page.setDefaultTimeout(timeout);
doctor.on("console", (m) => { if (m.type() === "error") out.console.push(m.text().slice(0, 300)); });
doctor.on("response", (r) => { if (r.status() >= 400) out.failed.push(`${r.status()} ${r.url().slice(0, 160)}`); });
let viewerAuthorization = null;
doctor.on("request", (r) => {
  const auth = r.headers()["authorization"];
  if (auth && r.url().includes("/dicomweb/studies/") && r.url().includes("/series")) viewerAuthorization = auth;
});
const shot = (page, step) => page.screenshot({ path: `${config.screenshots}/share-${step}.png` });

try {
  // 1. The patient shares the study with a PIN.
  await patient.goto(`${config.facade}/auth/images`);
  await patient.fill("#username", config.username);
  await patient.fill("#password", config.password);
  await patient.click("button[type=submit]");
  await patient.waitForSelector("#share-form");
  await patient.selectOption("#study", config.studyUid);
  await patient.fill("#pin", config.pin);
  await patient.click("#create-share");
  const link = await patient.getAttribute("#share-link", "href");
  out.linkPrefix = link.slice(0, link.lastIndexOf("/") + 1);
  out.steps.push("shared");

  // 2. The doctor: the PIN, the download, the viewer.
  await doctor.goto(link);
  out.pinAsked = (await doctor.$("#pin")) !== null;
  await doctor.fill("#pin", config.pin);
  await doctor.click("#open");
  await doctor.waitForSelector("button[data-action=download]");
  const [download] = await Promise.all([doctor.waitForEvent("download"), doctor.click("button[data-action=download]")]);
  out.download = `${config.downloads}/shared-study.zip`;
  await download.saveAs(out.download);
  out.steps.push("downloaded");
  await doctor.click("button[data-action=view]");
  const handle = await doctor.waitForFunction(canvasValues, 16, { timeout, polling: 250 });
  out.viewerValues = await handle.jsonValue();
  out.viewerUrl = doctor.url();
  await shot(doctor, "1-viewer");
  out.steps.push("viewed");

  // 3. The patient revokes; the doctor's next request and a reload of the link are refused.
  const url = `${config.facade}/dicomweb/studies/${config.studyUid}/series`;
  const fetchWith = (auth) => doctor.evaluate(async ([u, a]) => (await fetch(u, { headers: { Authorization: a } })).status,
                                              [url, auth]);
  out.beforeRevoke = await fetchWith(viewerAuthorization);
  await patient.goto(`${config.facade}/auth/images`);
  await patient.click("button.revoke");
  await patient.waitForSelector("text=Link revoked");
  out.steps.push("revoked");
  out.afterRevoke = await fetchWith(viewerAuthorization);
  const reloaded = await doctor.goto(link);
  out.reloadStatus = reloaded.status();
  await shot(doctor, "2-revoked");
  out.steps.push("refused");
} catch (error) {
  out.failure = String((error && error.stack) || error);
  try { await shot(doctor, "failure"); } catch { /* closed */ }
  out.failureUrl = doctor.url();
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out));
