-- The schema of release 51fd46a (Base.metadata.create_all, before migrations) on sqlite:
-- each CREATE TABLE / CREATE INDEX that create_all issued, compiled for this dialect.
-- Statements are separated by ';' lines. Used by tests/smart/test_migrations.py.
CREATE TABLE facade_patient_alias (
	fhir_id VARCHAR(64) NOT NULL, 
	patient_id TEXT NOT NULL, 
	PRIMARY KEY (fhir_id)
)
;
CREATE TABLE smart_client (
	id INTEGER NOT NULL, 
	client_id VARCHAR(128) NOT NULL, 
	client_secret_hash VARCHAR(256), 
	client_name VARCHAR(256), 
	redirect_uris JSON NOT NULL, 
	scope TEXT, 
	token_endpoint_auth_method VARCHAR(64) NOT NULL, 
	grant_types JSON NOT NULL, 
	jwks JSON, 
	jwks_uri TEXT, 
	created_at INTEGER NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (client_id)
)
;
CREATE TABLE smart_issued_access_token (
	jti VARCHAR(64) NOT NULL, 
	code_id INTEGER NOT NULL, 
	exp INTEGER NOT NULL, 
	PRIMARY KEY (jti)
)
;
CREATE INDEX ix_smart_issued_access_token_code_id ON smart_issued_access_token (code_id)
;
CREATE INDEX ix_smart_issued_access_token_exp ON smart_issued_access_token (exp)
;
CREATE TABLE smart_launch_context (
	launch_id VARCHAR(64) NOT NULL, 
	patient VARCHAR(64), 
	encounter VARCHAR(64), 
	username VARCHAR(128), 
	need_patient_banner BOOLEAN NOT NULL, 
	smart_style_url TEXT, 
	created_at INTEGER NOT NULL, 
	expires_at INTEGER NOT NULL, 
	used_at INTEGER, 
	PRIMARY KEY (launch_id)
)
;
CREATE TABLE smart_login_attempt (
	id INTEGER NOT NULL, 
	username VARCHAR(128) NOT NULL, 
	address VARCHAR(64) NOT NULL, 
	at INTEGER NOT NULL, 
	PRIMARY KEY (id)
)
;
CREATE INDEX ix_smart_login_attempt_address ON smart_login_attempt (address)
;
CREATE INDEX ix_smart_login_attempt_at ON smart_login_attempt (at)
;
CREATE INDEX ix_smart_login_attempt_username ON smart_login_attempt (username)
;
CREATE TABLE smart_patient_access (
	kind VARCHAR(16) NOT NULL, 
	subject VARCHAR(128) NOT NULL, 
	patient VARCHAR(64) NOT NULL, 
	granted_at INTEGER NOT NULL, 
	PRIMARY KEY (kind, subject, patient)
)
;
CREATE TABLE smart_revoked_token (
	jti VARCHAR(64) NOT NULL, 
	exp INTEGER NOT NULL, 
	PRIMARY KEY (jti)
)
;
CREATE INDEX ix_smart_revoked_token_exp ON smart_revoked_token (exp)
;
CREATE TABLE smart_setting (
	name VARCHAR(64) NOT NULL, 
	value TEXT NOT NULL, 
	PRIMARY KEY (name)
)
;
CREATE TABLE smart_signing_key (
	kid VARCHAR(64) NOT NULL, 
	private_jwk TEXT NOT NULL, 
	alg VARCHAR(16) NOT NULL, 
	created_at INTEGER NOT NULL, 
	retired_at INTEGER, 
	PRIMARY KEY (kid)
)
;
CREATE TABLE smart_used_assertion (
	client_id VARCHAR(128) NOT NULL, 
	jti VARCHAR(256) NOT NULL, 
	exp INTEGER NOT NULL, 
	PRIMARY KEY (client_id, jti)
)
;
CREATE INDEX ix_smart_used_assertion_exp ON smart_used_assertion (exp)
;
CREATE TABLE smart_user (
	id INTEGER NOT NULL, 
	username VARCHAR(128) NOT NULL, 
	password_hash VARCHAR(256) NOT NULL, 
	patient VARCHAR(64), 
	role VARCHAR(32) NOT NULL, 
	fhir_user_reference VARCHAR(256), 
	PRIMARY KEY (id), 
	UNIQUE (username)
)
;
CREATE TABLE smart_authorization_code (
	id INTEGER NOT NULL, 
	code_hash VARCHAR(64) NOT NULL, 
	client_id VARCHAR(128) NOT NULL, 
	user_id INTEGER NOT NULL, 
	redirect_uri TEXT NOT NULL, 
	scope TEXT NOT NULL, 
	nonce TEXT, 
	code_challenge VARCHAR(128), 
	code_challenge_method VARCHAR(16), 
	aud TEXT, 
	context JSON NOT NULL, 
	auth_time INTEGER NOT NULL, 
	expires_at INTEGER NOT NULL, 
	used_at INTEGER, 
	access_jti VARCHAR(64), 
	PRIMARY KEY (id), 
	UNIQUE (code_hash), 
	FOREIGN KEY(user_id) REFERENCES smart_user (id)
)
;
CREATE INDEX ix_smart_authorization_code_client_id ON smart_authorization_code (client_id)
;
CREATE TABLE smart_refresh_token (
	id INTEGER NOT NULL, 
	token_hash VARCHAR(64) NOT NULL, 
	client_id VARCHAR(128) NOT NULL, 
	user_id INTEGER, 
	scope TEXT NOT NULL, 
	context JSON NOT NULL, 
	issued_at INTEGER NOT NULL, 
	expires_at INTEGER, 
	revoked_at INTEGER, 
	code_id INTEGER, 
	PRIMARY KEY (id), 
	UNIQUE (token_hash), 
	FOREIGN KEY(user_id) REFERENCES smart_user (id)
)
;
CREATE INDEX ix_smart_refresh_token_client_id ON smart_refresh_token (client_id)
;
CREATE INDEX ix_smart_refresh_token_code_id ON smart_refresh_token (code_id)
;
