//! Minimal Confluent Schema Registry client: register a subject's schema on start and get
//! its id for the Confluent wire format. Registration is idempotent on the registry side
//! (the same schema under the same subject returns the existing id).

use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("schema registry {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("schema registry refused subject {subject}: HTTP {status}: {body}")]
    Refused {
        subject: String,
        status: u16,
        body: String,
    },
}

#[derive(Clone)]
pub struct RegistryClient {
    base: String,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct IdResponse {
    id: u32,
}

impl RegistryClient {
    pub fn new(base_url: &str) -> Self {
        crate::install_crypto_provider();
        RegistryClient {
            base: base_url.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("reqwest client with static settings"),
        }
    }

    /// Registers `schema_json` under `subject` and returns its global id.
    pub async fn register(&self, subject: &str, schema_json: &str) -> Result<u32, RegistryError> {
        let url = format!("{}/subjects/{}/versions", self.base, subject);
        let body = serde_json::json!({ "schema": schema_json, "schemaType": "AVRO" });
        let resp = self
            .http
            .post(&url)
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .json(&body)
            .send()
            .await
            .map_err(|source| RegistryError::Http {
                url: url.clone(),
                source,
            })?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(RegistryError::Refused {
                subject: subject.to_string(),
                status: status.as_u16(),
                body: body.chars().take(500).collect(),
            });
        }
        let id: IdResponse = resp
            .json()
            .await
            .map_err(|source| RegistryError::Http { url, source })?;
        Ok(id.id)
    }
}
