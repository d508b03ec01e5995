//! How a session key travels with a gateway call: `authorization: Bearer
//! <key>` metadata, written by every client here and read by the gateway's
//! `SessionAuth` layer. The key is a secret: nothing here logs it.

/// The metadata key that carries the session key.
pub const AUTHORIZATION: &str = "authorization";

const SCHEME: &str = "Bearer ";

/// `message` with the session key as its bearer token.
pub fn authorized<T>(message: T, session_key: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    let value = format!("{SCHEME}{session_key}")
        .parse()
        .map_err(|_| anyhow::anyhow!("the session key is not valid metadata; log in again"))?;
    request.metadata_mut().insert(AUTHORIZATION, value);
    Ok(request)
}

/// The session key a call carries, if it carries one in the right form.
pub fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix(SCHEME)
}
