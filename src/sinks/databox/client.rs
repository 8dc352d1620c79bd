//! The Databox requests, sent through the one hardened client.
//!
//! Invariant: a request counts as delivered only when it is answered 2xx and Databox's status
//! word confirms it; 5xx, 429 and network failures stay retryable, any other 4xx is final.

use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};
use url::Url;

use super::super::{Error, SinkContext};
use super::wire::{DATASET_BATCH, DATASET_OK, PUSH_OK};
use crate::job::Receipt;

/// The media type of Databox's push API, version 2 (as the seed's library sent it).
const PUSH_MEDIA_TYPE: &str = "application/vnd.databox.v2+json";

/// One request to Databox: where, with which credential, within how long.
pub struct Call<'a> {
    pub ctx: &'a SinkContext,
    pub url: &'a Url,
    pub token: &'a str,
    pub timeout: Duration,
}

impl Call<'_> {
    /// Pushes every metric in one request, authenticated with HTTP Basic `<token>:`.
    pub async fn push(&self, body: &Value) -> Result<Receipt, Error> {
        let request = self
            .request()
            .basic_auth(self.token, None::<&str>)
            .header(ACCEPT, PUSH_MEDIA_TYPE);
        send(self.ctx, request, body, PUSH_OK).await
    }

    /// Ingests `rows` in batches of at most [`DATASET_BATCH`], one after the other, with the
    /// API key in `x-api-key`. A failed batch fails the delivery, naming the batch; the whole
    /// delivery is then retried, which rewrites the accepted batches' rows in place because
    /// Databox identifies rows by the dataset's primary keys and the rows do not change.
    /// The receipt is the last batch's answer.
    pub async fn ingest(&self, rows: &[Value]) -> Result<Receipt, Error> {
        let total = rows.len().div_ceil(DATASET_BATCH);
        let mut receipt = Receipt::default();
        for (index, batch) in rows.chunks(DATASET_BATCH).enumerate() {
            let request = self
                .request()
                .header("x-api-key", self.token)
                .header(ACCEPT, "application/json");
            let body = json!({ "records": batch });
            receipt = send(self.ctx, request, &body, DATASET_OK)
                .await
                .map_err(|error| Error::Part {
                    number: index + 1,
                    total,
                    records: batch.len(),
                    error: Box::new(error),
                })?;
        }
        Ok(receipt)
    }

    fn request(&self) -> RequestBuilder {
        self.ctx
            .http
            .request(Method::POST, self.url.clone())
            .timeout(self.timeout)
    }
}

/// Sends `body` as JSON and checks the answer: its status, then Databox's `status` word.
async fn send(
    ctx: &SinkContext,
    request: RequestBuilder,
    body: &Value,
    expected: &str,
) -> Result<Receipt, Error> {
    let payload = serde_json::to_vec(body).expect("a JSON value always serialises");
    let request = request
        .header(CONTENT_TYPE, "application/json")
        .body(payload);
    let response = ctx.http.send(request).await?.error_for_status()?;
    super::wire::confirm(&response, expected)?;
    Ok(Receipt::from_response(&response))
}
