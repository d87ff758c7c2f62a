//! JSON over HTTP(S) to the Cloudpods services: one connection per request (a bootstrap step
//! makes a few dozen calls), bounded in time and size, TLS verified against the services CA.
//!
//! It owns the transport and the error shape of a call; it never knows what a call means (the
//! keystone and region modules do). Written on hyper's client connection, which the project
//! already uses, rather than adding a client crate to the binary.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::CloudpodsError;

/// How long one call may take, connection included.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read.
const MAX_BODY: usize = 8 << 20;
/// Every request says it is a Cloudpods client: the services answer their default handlers
/// (`/ping`, `/version`) only to known user agents.
const USER_AGENT: &str = "yunioncloud-go/201708 cloudlet";

/// What a service answered.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// `X-Subject-Token` (keystone's token), when present.
    pub subject_token: Option<String>,
    /// The body as JSON (`Null` when empty or not JSON).
    pub body: Value,
}

/// A client for `http://` and `https://` URLs; `https://` servers must present a certificate
/// from `tls`'s roots for the URL's host.
#[derive(Debug, Clone)]
pub struct HttpClient {
    tls: Option<Arc<ClientConfig>>,
}

impl HttpClient {
    /// A client that trusts the CA certificates in `ca_pem` for `https://` (none: plain
    /// `http://` only).
    pub fn new(ca_pem: Option<&str>) -> Result<Self, CloudpodsError> {
        let tls = match ca_pem {
            None => None,
            Some(pem) => {
                let roots = cloudlet_pki::certs_from_pem(pem)
                    .map_err(|e| CloudpodsError::Invalid(format!("the services CA: {e}")))?;
                let config = cloudlet_pki::verified_client_config_without_cert(&roots)
                    .map_err(|e| CloudpodsError::Invalid(format!("TLS client: {e}")))?;
                Some(Arc::new(config))
            }
        };
        Ok(Self { tls })
    }

    /// `method url` with `token` as `X-Auth-Token` and `body` as JSON. Any status comes back
    /// as an [`Answer`]; only transport failures are errors.
    pub async fn call(
        &self,
        method: Method,
        url: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Answer, CloudpodsError> {
        let fail = |detail: String| CloudpodsError::Http {
            method: method.to_string(),
            url: url.to_owned(),
            detail,
        };
        tokio::time::timeout(
            CALL_TIMEOUT,
            self.call_inner(method.clone(), url, token, body),
        )
        .await
        .map_err(|_| fail(format!("no answer within {CALL_TIMEOUT:?}")))?
        .map_err(fail)
    }

    /// [`HttpClient::call`], wanting a 2xx answer: any other status is an error that carries
    /// the service's message.
    pub async fn call_ok(
        &self,
        method: Method,
        url: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Answer, CloudpodsError> {
        let answer = self.call(method.clone(), url, token, body).await?;
        if answer.status.is_success() {
            return Ok(answer);
        }
        Err(answer.error(&method, url))
    }

    /// GETs `url`: its body, or `None` when the service says 404; any other status but 2xx is
    /// an error.
    pub async fn get_found(
        &self,
        url: &str,
        token: Option<&str>,
    ) -> Result<Option<Value>, CloudpodsError> {
        let answer = self.call(Method::GET, url, token, None).await?;
        match answer.status {
            s if s.is_success() => Ok(Some(answer.body)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(answer.error(&Method::GET, url)),
        }
    }

    async fn call_inner(
        &self,
        method: Method,
        url: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Answer, String> {
        let uri: Uri = url.parse().map_err(|e| format!("invalid URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err("expected an http:// or https:// URL".to_owned()),
        };
        let host = uri.host().ok_or("the URL has no host")?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let path = uri
            .path_and_query()
            .map_or("/", hyper::http::uri::PathAndQuery::as_str)
            .to_owned();
        let authority = uri.authority().map(ToString::to_string).unwrap_or_default();
        let payload = match body {
            Some(v) => Bytes::from(serde_json::to_vec(v).map_err(|e| e.to_string())?),
            None => Bytes::new(),
        };
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::USER_AGENT, USER_AGENT)
            .header(hyper::header::ACCEPT, "application/json");
        if body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        if let Some(token) = token {
            request = request.header("X-Auth-Token", token);
        }
        let request = request
            .body(Full::new(payload))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let response = if https {
            let Some(tls) = &self.tls else {
                return Err("an https:// URL, but no CA to verify it with".to_owned());
            };
            let name = ServerName::try_from(host.clone())
                .map_err(|e| format!("invalid host {host:?}: {e}"))?;
            let stream = TlsConnector::from(Arc::clone(tls))
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            send(TokioIo::new(stream), request).await?
        } else {
            send(TokioIo::new(tcp), request).await?
        };
        Ok(response)
    }
}

async fn send<T>(io: T, request: Request<Full<Bytes>>) -> Result<Answer, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    let driver = tokio::spawn(conn);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    let subject_token = response
        .headers()
        .get("X-Subject-Token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    driver.abort();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(Answer {
        status,
        subject_token,
        body,
    })
}

impl Answer {
    /// This answer to `method url` as an error: its status and the service's message.
    pub fn error(&self, method: &Method, url: &str) -> CloudpodsError {
        CloudpodsError::Http {
            method: method.to_string(),
            url: url.to_owned(),
            detail: format!("{} {}", self.status, error_message(&self.body)),
        }
    }
}

/// `text` percent-encoded (all but RFC 3986's unreserved characters), for a query string or a
/// path segment.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The message a Cloudpods service put in an error body (`{"error": {"code", "class",
/// "details"}}`), or the body itself.
pub fn error_message(body: &Value) -> String {
    let error = &body["error"];
    match (error["class"].as_str(), error["details"].as_str()) {
        (Some(class), Some(details)) => format!("{class}: {details}"),
        (None, Some(details)) => details.to_owned(),
        _ if body.is_null() => "(no body)".to_owned(),
        _ => {
            let text = body.to_string();
            text.chars().take(500).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding() {
        assert_eq!(encode("region0-zone0"), "region0-zone0");
        assert_eq!(encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn a_cloudpods_error_body_becomes_its_class_and_details() {
        let body = serde_json::json!({"error": {"code": 403, "class": "ForbiddenError",
            "details": "isClassRbacAllowed: not enough privilege"}});
        assert_eq!(
            error_message(&body),
            "ForbiddenError: isClassRbacAllowed: not enough privilege"
        );
        assert_eq!(error_message(&Value::Null), "(no body)");
    }
}
