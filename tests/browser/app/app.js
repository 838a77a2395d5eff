// A tiny SMART imaging app (Argonaut SMART Imaging Access pattern): after the redirect it
// finds the patient's studies, reads the WADO-RS base from the Endpoint and fetches one frame
// with the same access token, writing every result into the page for the test to read.
"use strict";

function show(id, value) {
  document.getElementById(id).textContent = String(value);
}

// Length of the first part's body of a multipart/related answer (RFC 2046 §5.1.1).
function firstPartLength(bytes, contentType) {
  var match = /boundary="?([^";]+)"?/i.exec(contentType || "");
  if (!match) return -1;
  var text = new TextDecoder("latin1").decode(bytes);  // one character per byte
  var delimiter = "--" + match[1];
  var start = text.indexOf(delimiter);
  var headersEnd = text.indexOf("\r\n\r\n", start);
  var next = text.indexOf("\r\n" + delimiter, headersEnd);
  if (start < 0 || headersEnd < 0 || next < 0) return -1;
  return next - (headersEnd + 4);
}

async function run(client) {
  show("patient", client.patient.id);
  var patient = await client.patient.read();
  show("patient-name", patient.name && patient.name[0] ? patient.name[0].text : "");
  var bundle = await client.request(
    "ImagingStudy?patient=" + encodeURIComponent(client.patient.id) + "&_include=ImagingStudy:endpoint");
  var entries = bundle.entry || [];
  var study = entries.map(function (e) { return e.resource; })
    .find(function (r) { return r.resourceType === "ImagingStudy"; });
  if (!study) throw new Error("no ImagingStudy for the patient");
  show("study", study.id);
  var endpointRef = study.endpoint[0].reference;  // "Endpoint/<id>"
  var endpoint = entries.map(function (e) { return e.resource; })
    .find(function (r) { return r.resourceType + "/" + r.id === endpointRef; });
  if (!endpoint) endpoint = await client.request(endpointRef);
  show("endpoint", endpoint.address);
  var series = study.series[0];
  var instance = series.instance[0];
  var url = endpoint.address + "/studies/" + study.id + "/series/" + series.uid +
    "/instances/" + instance.uid + "/frames/1";
  show("frame-url", url);
  // A cross-origin GET with Authorization: the browser sends a CORS preflight first.
  var response = await fetch(url, {
    headers: {
      "Authorization": "Bearer " + client.state.tokenResponse.access_token,
      "Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
    }
  });
  show("frame-status", response.status + " " + response.headers.get("Content-Type"));
  var bytes = new Uint8Array(await response.arrayBuffer());
  show("response-bytes", bytes.length);
  show("frame-bytes", firstPartLength(bytes, response.headers.get("Content-Type")));
  show("status", response.ok ? "done" : "error");
}

FHIR.oauth2.ready()
  .then(run)
  .catch(function (error) {
    show("status", "error");
    show("error", (error && error.stack) || error);
  });
