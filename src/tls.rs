//! The one TLS stack: rustls with the aws-lc-rs provider, for every HTTP
//! client in the process (rmcp's and ours on reqwest 0.13, teloxide's on
//! reqwest 0.12). The binary links no OpenSSL, and the image needs only CA
//! roots.

/// Makes aws-lc-rs the process-wide rustls provider. teloxide's client is
/// built without a provider of its own and would refuse to start without
/// it; calling this more than once is harmless.
pub fn install() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
