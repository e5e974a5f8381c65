//! What a terminal command talks to: a server of the config, by id, or any
//! server, by URL (to try it before enabling it for users).

use std::sync::Arc;

use url::Url;

use crate::config::{
    ClientCredential, ClientCredentialsSettings, Config, EnterpriseSettings, OAuthSettings,
    ServerAuth, ServerConfig, TokenAuthMethod,
};
use crate::secret::Secret;

/// How to authorize with a server given by URL: the same choices as a
/// config's `[mcp.servers.oauth]` table.
#[derive(Debug, Clone, Default)]
pub struct AuthOptions {
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub token_endpoint_auth_method: Option<TokenAuthMethod>,
    pub scopes: Vec<String>,
    /// Leave out RFC 8707 `resource`.
    pub no_resource: bool,
    /// A Client ID Metadata Document URL to use as the client id where the
    /// server supports them (SEP-991).
    pub client_metadata_url: Option<String>,
    /// Use the client-credentials grant (a machine client: `client_id`
    /// with `client_secret` or `private_key`) instead of a user's sign-in.
    pub client_credentials: bool,
    /// A PEM private key for `private_key_jwt`, and its algorithm.
    pub private_key: Option<(Secret, String)>,
    /// Enterprise-managed authorization: the identity provider and the
    /// identity to exchange there.
    pub enterprise: Option<EnterpriseIdp>,
}

#[derive(Debug, Clone)]
pub struct EnterpriseIdp {
    pub issuer: String,
    pub token_endpoint: String,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub id_token: Secret,
}

#[derive(Debug, Clone)]
pub enum Target {
    Configured(String),
    Url(Url),
}

impl Target {
    /// An `http(s)://` URL, or a server id of the config.
    pub fn parse(text: &str) -> Target {
        match Url::parse(text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                Target::Url(url)
            }
            _ => Target::Configured(text.to_owned()),
        }
    }

    pub fn is_url(&self) -> bool {
        matches!(self, Target::Url(_))
    }

    /// The server to use. One given by URL is an OAuth server (its tokens
    /// are looked up and, with `--login`, obtained); whether a request
    /// carries them is decided per request.
    pub fn server(&self, config: &Config, auth: &AuthOptions) -> Result<Arc<ServerConfig>, String> {
        match self {
            Target::Configured(id) => config.server(&id.to_lowercase()).cloned().ok_or_else(|| {
                let ids: Vec<&str> = config.servers.iter().map(|s| s.id.as_str()).collect();
                format!(
                    "no server \"{id}\" in the config (servers: {}); a URL works too",
                    if ids.is_empty() {
                        "none".to_owned()
                    } else {
                        ids.join(", ")
                    }
                )
            }),
            Target::Url(url) if auth.enterprise.is_some() => {
                let idp = auth
                    .enterprise
                    .as_ref()
                    .ok_or("--idp-token-endpoint is missing")?;
                let client_id = auth
                    .client_id
                    .clone()
                    .ok_or("--idp-token-endpoint needs --client-id (the client at the server's authorization server)")?;
                Ok(Arc::new(ServerConfig::from_url(
                    url.clone(),
                    ServerAuth::Enterprise(EnterpriseSettings {
                        idp_issuer: idp.issuer.clone(),
                        idp_token_endpoint: idp.token_endpoint.clone(),
                        idp_client_id: idp.client_id.clone(),
                        idp_client_secret: idp.client_secret.clone(),
                        id_token: idp.id_token.clone(),
                        client_id,
                        client_secret: auth.client_secret.clone(),
                        scopes: auth.scopes.clone(),
                    }),
                )))
            }
            Target::Url(url) if auth.client_credentials => {
                let client_id = auth
                    .client_id
                    .clone()
                    .ok_or("--client-credentials needs --client-id")?;
                let credential = match (&auth.client_secret, &auth.private_key) {
                    (Some(secret), None) => ClientCredential::Secret(secret.clone()),
                    (None, Some((pem, algorithm))) => ClientCredential::PrivateKey {
                        pem: pem.clone(),
                        algorithm: algorithm.clone(),
                    },
                    _ => {
                        return Err(
                            "--client-credentials needs --client-secret or --private-key-file (one of them)"
                                .to_owned(),
                        );
                    }
                };
                Ok(Arc::new(ServerConfig::from_url(
                    url.clone(),
                    ServerAuth::ClientCredentials(ClientCredentialsSettings {
                        client_id,
                        credential,
                        scopes: auth.scopes.clone(),
                    }),
                )))
            }
            Target::Url(url) => Ok(Arc::new(ServerConfig::from_url(
                url.clone(),
                ServerAuth::OAuth(OAuthSettings {
                    client_metadata_url: auth.client_metadata_url.clone(),
                    scopes: auth.scopes.clone(),
                    resource: !auth.no_resource,
                    token_endpoint_auth_method: auth.token_endpoint_auth_method,
                    client_id: auth.client_id.clone(),
                    client_secret: auth.client_secret.clone(),
                }),
            ))),
        }
    }
}
