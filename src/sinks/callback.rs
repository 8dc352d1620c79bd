//! The `callback` sink: one signed POST of the whole job result to the client's URL, with the
//! Standard Webhooks headers (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
//!
//! Invariants: the body always carries every source's outcome and its data (the datahog seed
//! sent `[{},{}]`); the `webhook-id` is the same on every retry of one delivery, so receivers
//! can drop duplicates; only a 2xx answer is success, and `410 Gone` disables the endpoint.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::Sha256;
use url::{Host, Url};

use super::{Delivery, Error, Sink, SinkContext, SinkValidation};
use crate::clock::rfc3339;
use crate::config::{duration, durations};
use crate::engine::FixedSchedule;
use crate::job::Receipt;
use crate::net::UpstreamError;

/// Longest callback URL accepted.
pub const MAX_URL_LEN: usize = 2048;
/// The prefix of Standard Webhooks secrets.
const SECRET_PREFIX: &str = "whsec_";
/// Bytes of a generated signing key.
const GENERATED_KEY_BYTES: usize = 32;

/// Operator settings of callbacks (`[sinks.callback]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallbackConfig {
    /// Signing secret (`whsec_…`) for jobs that name none; without it each job gets its own,
    /// generated and returned once at creation.
    pub secret: Option<String>,
    /// Waits before each attempt (the first is normally `0s`); the number of entries is the
    /// number of attempts.
    #[serde(with = "durations")]
    pub schedule: Vec<Duration>,
    /// Each wait varies by up to ± this fraction, so retries of many jobs spread out.
    pub jitter: f64,
    /// How long one delivery may take.
    #[serde(with = "duration")]
    pub timeout: Duration,
}

impl Default for CallbackConfig {
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        Self {
            secret: None,
            schedule: vec![
                Duration::ZERO,
                Duration::from_secs(5),
                minutes(5),
                minutes(30),
                minutes(2 * 60),
                minutes(5 * 60),
                minutes(10 * 60),
                minutes(10 * 60),
            ],
            jitter: 0.2,
            timeout: Duration::from_secs(15),
        }
    }
}

impl CallbackConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.schedule.is_empty() || self.schedule.len() > 100 {
            return Err("sinks.callback.schedule needs 1 to 100 entries".into());
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err("sinks.callback.jitter must be between 0 and 1".into());
        }
        if self.timeout.is_zero() {
            return Err("sinks.callback.timeout must be positive".into());
        }
        if let Some(secret) = &self.secret {
            signing_key(secret).map_err(|error| format!("sinks.callback.secret: {error}"))?;
        }
        Ok(())
    }

    /// The retry schedule of callback deliveries.
    pub fn schedule(&self) -> FixedSchedule {
        FixedSchedule {
            delays: self.schedule.clone(),
            jitter: self.jitter,
        }
    }
}

/// Signed webhook delivery of a job's result.
#[derive(Debug, Clone, Default)]
pub struct CallbackSink {
    config: CallbackConfig,
}

impl CallbackSink {
    pub fn new(config: CallbackConfig) -> Self {
        Self { config }
    }
}

/// Decodes a `whsec_…` secret into its HMAC key.
pub fn signing_key(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret
        .strip_prefix(SECRET_PREFIX)
        .ok_or_else(|| format!("a signing secret starts with `{SECRET_PREFIX}`"))?;
    let key = BASE64
        .decode(encoded)
        .map_err(|_| "the part after `whsec_` must be base64".to_owned())?;
    if !(24..=64).contains(&key.len()) {
        return Err("the signing key must be 24 to 64 bytes".into());
    }
    Ok(key)
}

/// A new random `whsec_…` secret.
pub fn generate_secret() -> String {
    let mut key = [0u8; GENERATED_KEY_BYTES];
    rand::rng().fill_bytes(&mut key);
    format!("{SECRET_PREFIX}{}", BASE64.encode(key))
}

/// The `webhook-signature` value: `v1,` + base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// Checks a callback URL as submitted: http(s), bounded, no credentials, and an address the
/// outgoing policy would reach.
pub fn check_url(raw: &str, ctx: &SinkValidation) -> Result<Url, String> {
    if raw.len() > MAX_URL_LEN {
        return Err(format!("url is longer than {MAX_URL_LEN} characters"));
    }
    let url = Url::parse(raw).map_err(|error| format!("url is not an absolute URL: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "url scheme `{}` is not allowed (use http or https)",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("url must not carry credentials (user:password@)".into());
    }
    match url.host() {
        None => return Err("url has no host".into()),
        Some(Host::Domain(domain)) => {
            let domain = domain.trim_end_matches('.').to_ascii_lowercase();
            if domain == "localhost" || domain.ends_with(".localhost") {
                ctx.guard
                    .check_ip(std::net::Ipv4Addr::LOCALHOST.into())
                    .map_err(|_| "url points at this machine (localhost)".to_owned())?;
            }
        }
        Some(_) => ctx.guard.check_url(&url).map_err(|error| match error {
            UpstreamError::Refused { reason } => format!("url is not allowed: {reason}"),
            other => other.to_string(),
        })?,
    }
    Ok(url)
}

fn url_setting(settings: &Value) -> &str {
    settings
        .get("url")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The callback body: the job, its status and timestamps, and each source with its data.
///
/// Serialised from borrowed records (no copy of the collected data into a JSON tree first);
/// fields are in alphabetical order, as the JSON objects the body was first built from wrote
/// them, so the bytes receivers see are unchanged.
#[derive(Serialize)]
pub struct Body<'a> {
    data: BodyJob<'a>,
    timestamp: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Serialize)]
struct BodyJob<'a> {
    collected_at: String,
    created_at: String,
    id: uuid::Uuid,
    sources: Vec<BodySource<'a>>,
    status: crate::job::JobStatus,
}

#[derive(Serialize)]
struct BodySource<'a> {
    attempts: u32,
    connector: &'a str,
    data: Vec<&'a Value>,
    error: Option<&'a str>,
    name: &'a str,
    records: usize,
    status: crate::job::StepState,
}

/// The body of `delivery` sent at `sent_at`.
pub fn body(delivery: &Delivery, sent_at: i64) -> Body<'_> {
    let sources = delivery
        .sources
        .iter()
        .map(|source| {
            let data: Vec<&Value> = delivery
                .records
                .iter()
                .filter(|(step_id, _)| *step_id == source.step_id)
                .map(|(_, record)| record)
                .collect();
            BodySource {
                attempts: source.attempts,
                connector: &source.connector,
                records: data.len(),
                data,
                error: source.error.as_deref(),
                name: &source.name,
                status: source.state,
            }
        })
        .collect();
    Body {
        data: BodyJob {
            collected_at: rfc3339(delivery.collected_at),
            created_at: rfc3339(delivery.created_at),
            id: delivery.job_id,
            sources,
            status: delivery.status,
        },
        timestamp: rfc3339(sent_at),
        kind: format!("job.{}", delivery.status.as_str()),
    }
}

#[async_trait]
impl Sink for CallbackSink {
    fn kind(&self) -> &'static str {
        "callback"
    }

    fn description(&self) -> &'static str {
        "POSTs the job's result (status, each source's outcome and data) to a URL, signed with \
         Standard Webhooks headers, retried on a fixed schedule; 410 Gone disables the endpoint."
    }

    fn settings_schema(&self) -> Value {
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["url"],
            "properties": {
                "url": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_URL_LEN,
                    "description": "http(s) URL that receives the signed POST"
                },
                "secret": {
                    "type": "string",
                    "pattern": "^whsec_[A-Za-z0-9+/]+={0,2}$",
                    "writeOnly": true,
                    "description": "Standard Webhooks signing secret; generated when absent and no default is configured"
                }
            }
        })
    }

    fn validate(&self, ctx: &SinkValidation, settings: &Value) -> Result<(), Error> {
        check_url(url_setting(settings), ctx).map_err(Error::Settings)?;
        if let Some(secret) = settings.get("secret").and_then(Value::as_str) {
            signing_key(secret).map_err(|error| Error::Settings(format!("secret: {error}")))?;
        }
        Ok(())
    }

    fn prepare(&self, settings: &mut Map<String, Value>) -> Option<String> {
        if settings.contains_key("secret") || self.config.secret.is_some() {
            return None;
        }
        let secret = generate_secret();
        settings.insert("secret".into(), Value::String(secret.clone()));
        Some(secret)
    }

    fn endpoint(&self, settings: &Value) -> Option<String> {
        Some(url_setting(settings).to_owned())
    }

    fn retry_schedule(&self) -> Option<FixedSchedule> {
        Some(self.config.schedule())
    }

    async fn deliver(
        &self,
        ctx: &SinkContext,
        settings: &Value,
        delivery: &Delivery,
    ) -> Result<Receipt, Error> {
        let url = Url::parse(url_setting(settings))
            .map_err(|error| Error::Settings(format!("url: {error}")))?;
        let secret = settings
            .get("secret")
            .and_then(Value::as_str)
            .or(self.config.secret.as_deref())
            .ok_or_else(|| {
                Error::Settings("no signing secret: the job has none and none is configured".into())
            })?;
        let key = signing_key(secret).map_err(Error::Settings)?;
        let now = ctx.clock.now();
        let payload = serde_json::to_vec(&body(delivery, now))
            .map_err(|error| Error::Settings(format!("encoding the body: {error}")))?;
        let timestamp = now.div_euclid(1000);
        let signature = sign(&key, &delivery.delivery_id, timestamp, &payload);
        let request = ctx
            .http
            .request(reqwest::Method::POST, url)
            .timeout(self.config.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &delivery.delivery_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(payload);
        let response = ctx.http.send(request).await?;
        let receipt = Receipt::from_response(&response);
        match response.error_for_status() {
            Ok(_) => Ok(receipt),
            Err(error @ UpstreamError::Status { status: 410, .. }) => Err(Error::Gone(error)),
            Err(error) => Err(Error::Refused(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::AddressGuard;

    fn validation(allow: &[&str]) -> SinkValidation {
        SinkValidation {
            files_root: "/tmp".into(),
            guard: AddressGuard::new(allow.iter().map(|net| net.parse().expect("net")).collect()),
        }
    }

    #[test]
    fn the_body_is_the_documented_json_byte_for_byte() {
        use crate::job::{JobStatus, StepState};
        use crate::sinks::SourceOutcome;
        let job_id = uuid::Uuid::nil();
        let delivery = Delivery {
            job_id,
            delivery_id: "msg_1".into(),
            status: JobStatus::PartiallySucceeded,
            created_at: 1_000,
            collected_at: 2_000,
            sources: vec![
                SourceOutcome {
                    step_id: 1,
                    name: "a".into(),
                    connector: "http".into(),
                    state: StepState::Succeeded,
                    attempts: 1,
                    records: 2,
                    error: None,
                },
                SourceOutcome {
                    step_id: 2,
                    name: "b".into(),
                    connector: "http".into(),
                    state: StepState::Failed,
                    attempts: 3,
                    records: 0,
                    error: Some("503 from upstream".into()),
                },
            ],
            records: vec![
                (1, json!({"n": 1})),
                (2, json!("stray")),
                (1, json!({"n": 2})),
            ],
        };
        let expected = json!({
            "type": "job.partially_succeeded",
            "timestamp": "1970-01-01T00:00:03Z",
            "data": {
                "id": job_id,
                "status": "partially_succeeded",
                "created_at": "1970-01-01T00:00:01Z",
                "collected_at": "1970-01-01T00:00:02Z",
                "sources": [
                    {"name": "a", "connector": "http", "status": "succeeded", "attempts": 1,
                     "error": null, "records": 2, "data": [{"n": 1}, {"n": 2}]},
                    {"name": "b", "connector": "http", "status": "failed", "attempts": 3,
                     "error": "503 from upstream", "records": 1, "data": ["stray"]},
                ],
            }
        });
        assert_eq!(
            String::from_utf8(serde_json::to_vec(&body(&delivery, 3_000)).unwrap()).unwrap(),
            serde_json::to_string(&expected).unwrap()
        );
    }

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("key");
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn generated_secrets_decode_to_their_key() {
        let secret = generate_secret();
        assert_eq!(signing_key(&secret).expect("valid").len(), 32);
        assert_ne!(secret, generate_secret());
        assert!(signing_key("whsec_short").is_err());
        assert!(signing_key("sk_abcdefabcdefabcdefabcdefabcdefabcdef").is_err());
    }

    #[test]
    fn urls_are_checked_for_scheme_credentials_length_and_address() {
        let ctx = validation(&[]);
        assert!(check_url("https://hooks.example.com/in?x=1", &ctx).is_ok());
        for bad in [
            "",
            "/relative/path",
            "javascript:alert(1)",
            "ftp://example.com/x",
            "https://user:pw@example.com/",
            "http://10.0.0.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
            "http://0x7f000001/",
            "http://localhost:8080/",
            "http://api.localhost/",
        ] {
            assert!(check_url(bad, &ctx).is_err(), "{bad} accepted");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(check_url(&long, &ctx).is_err());
        let loopback = validation(&["127.0.0.1/32"]);
        assert!(check_url("http://127.0.0.1:9/cb", &loopback).is_ok());
        assert!(check_url("http://localhost:9/cb", &loopback).is_ok());
    }

    #[test]
    fn prepare_generates_a_secret_only_when_none_applies() {
        let sink = CallbackSink::default();
        let mut settings = Map::new();
        settings.insert("url".into(), json!("https://example.com"));
        let secret = sink.prepare(&mut settings).expect("generated");
        assert_eq!(settings["secret"], json!(secret));
        assert_eq!(sink.prepare(&mut settings), None, "kept as given");
        let with_default = CallbackSink::new(CallbackConfig {
            secret: Some(generate_secret()),
            ..CallbackConfig::default()
        });
        let mut settings = Map::new();
        assert_eq!(with_default.prepare(&mut settings), None);
        assert!(!settings.contains_key("secret"));
    }

    #[test]
    fn default_schedule_is_svix_like_and_config_is_checked() {
        let config = CallbackConfig::default();
        assert!(config.validate().is_ok());
        assert_eq!(config.schedule.len(), 8);
        let bad = CallbackConfig {
            schedule: Vec::new(),
            ..CallbackConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
