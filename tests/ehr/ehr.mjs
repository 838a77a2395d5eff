// An EHR for the tests of EHR-issued tokens (tests/smart/test_ehr_tokens.py): a real
// oidc-provider (the certified OpenID provider for Node) as the EHR's authorization server,
// plus the EHR's FHIR Patient read (a Patient with an MRN identifier).
//
// Environment:
//   EHR_PORT          loopback port to listen on (required)
//   EHR_RESOURCE      the facade's FHIR base: the resource indicator (RFC 8707) and aud of tokens
//   EHR_PATIENTS      JSON {"<login>": {"id": "<EHR Patient id>", "mrn": "<MRN>"}, ...}
//   EHR_MRN_SYSTEM    Identifier.system of the MRN
//   EHR_FACADE_SECRET the facade's client secret for introspection (client_secret_basic)
//   EHR_FACADE_JWKS   optional JSON JWK Set of the facade's introspection key (private_key_jwt)
//
// Clients: "imaging-app" (public, PKCE, JWT access tokens), "imaging-app-opaque" (public,
// PKCE, opaque tokens), "imaging-app-short" (JWT tokens living 3 s), "facade" and
// "facade-jwt" (introspection only). A resource "https://other.example/fhir" gets JWT tokens
// for another audience. The login is scripted: /interaction/<uid> logs in `login_hint` and
// grants what was asked, without a page.
import crypto from 'node:crypto';
import http from 'node:http';

import Provider from 'oidc-provider';

const port = Number(process.env.EHR_PORT);
const issuer = `http://127.0.0.1:${port}`;
const resource = process.env.EHR_RESOURCE;
const other = 'https://other.example/fhir';
const patients = JSON.parse(process.env.EHR_PATIENTS || '{}');
const mrnSystem = process.env.EHR_MRN_SYSTEM || 'urn:oid:2.16.840.1.113883.19.5';
const scope = 'launch/patient patient/ImagingStudy.rs patient/Patient.rs patient/*.rs';
const appClient = (id) => ({
  client_id: id,
  token_endpoint_auth_method: 'none',
  redirect_uris: ['http://127.0.0.1/callback'],
  grant_types: ['authorization_code'],
  response_types: ['code'],
});
const clients = [
  appClient('imaging-app'), appClient('imaging-app-opaque'), appClient('imaging-app-short'),
  {
    client_id: 'facade',
    client_secret: process.env.EHR_FACADE_SECRET || 'facade-secret',
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: [], redirect_uris: [], response_types: [],
  },
];
if (process.env.EHR_FACADE_JWKS) {
  clients.push({
    client_id: 'facade-jwt',
    token_endpoint_auth_method: 'private_key_jwt',
    jwks: JSON.parse(process.env.EHR_FACADE_JWKS),
    grant_types: [], redirect_uris: [], response_types: [],
  });
}

const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
// A new key at every start, named by its thumbprint: a restarted EHR has rotated its key.
const jwk = privateKey.export({ format: 'jwk' });
const kid = crypto.createHash('sha256').update(jwk.n).digest('base64url').slice(0, 16);
const signingKey = { ...jwk, kid, use: 'sig', alg: 'RS256' };

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: [signingKey] },
  pkce: { required: () => true },
  scopes: ['openid', 'offline_access', ...scope.split(' ')],
  findAccount: async (ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
  extraTokenClaims: async (ctx, token) => {
    const patient = patients[token.accountId];
    return patient ? { patient: patient.id } : undefined;
  },
  features: {
    devInteractions: { enabled: false },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, indicator, client) => {
        if (indicator !== resource && indicator !== other) {
          throw new Error(`unknown resource ${indicator}`);
        }
        const opaque = client.clientId === 'imaging-app-opaque';
        return {
          scope,
          audience: indicator,
          accessTokenTTL: client.clientId === 'imaging-app-short' ? 3 : 600,
          accessTokenFormat: opaque ? 'opaque' : 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
});

// The scripted login: log in `login_hint`, grant every scope asked, no page.
async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  if (prompt.name === 'login') {
    const accountId = params.login_hint || 'alice';
    await provider.interactionFinished(req, res, { login: { accountId } }, { mergeWithLastSubmission: false });
    return;
  }
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const missing = prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

// The EHR's FHIR Patient read: any bearer token that the provider knows or that is a JWT.
function patientRead(req, res, id) {
  const auth = req.headers.authorization || '';
  const found = Object.values(patients).find((p) => p.id === id);
  res.setHeader('Content-Type', 'application/fhir+json');
  if (!auth.startsWith('Bearer ')) {
    res.statusCode = 401;
    res.end(JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'login' }] }));
    return;
  }
  if (!found) {
    res.statusCode = 404;
    res.end(JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'not-found' }] }));
    return;
  }
  res.end(JSON.stringify({
    resourceType: 'Patient',
    id,
    identifier: [{
      type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MR' }] },
      system: mrnSystem,
      value: found.mrn,
    }],
  }));
}

const callback = provider.callback();
const server = http.createServer(async (req, res) => {
  try {
    const path = new URL(req.url, issuer).pathname;
    const patient = path.match(/^\/fhir\/Patient\/([A-Za-z0-9\-.]{1,64})$/);
    if (patient) {
      patientRead(req, res, patient[1]);
    } else if (path.startsWith('/interaction/')) {
      await interaction(req, res);
    } else {
      callback(req, res);
    }
  } catch (err) {
    res.statusCode = 500;
    res.end(String(err));
  }
});
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`EHR listening on ${issuer}\n`);
});
process.on('SIGTERM', () => process.exit(0)); // at once: a stopped EHR is what the tests want
