//! S3 bucket URLs, the S3 [`OpendalStore`] and bucket creation.
//!
//! A bucket is named by one URL: `http(s)://host[:port]/bucket` addresses an
//! S3-compatible server path-style (SeaweedFS, MinIO, Ceph RGW), and
//! `https://bucket.s3[.region].amazonaws.com` is AWS's virtual-hosted form, whose region
//! comes from the host name. The store never looks for credentials on its own (no
//! environment, no `~/.aws`, no EC2 instance metadata), so what it uses is exactly what
//! the volume was configured with and tests never reach the network; without keys it
//! sends unsigned (anonymous) requests. OpenDAL has no call to create a bucket, so
//! [`create_bucket`] signs a `PUT /bucket` itself with the same signer OpenDAL uses
//! (reqsign) and sends it through OpenDAL's HTTP transport.

use crate::opendal::{init_opendal, map_opendal_error, no_such_bucket, Backend, OP_TIMEOUT};
use crate::{Error, OpendalStore, Result};
use ::opendal::{Buffer, HttpTransporter, Operator};
use reqsign_aws_v4::{RequestSigner, StaticCredentialProvider};
use reqsign_core::{Context, Signer};
use url::Url;

/// Region used when neither the bucket URL nor `AWS_REGION` names one.
const DEFAULT_REGION: &str = "us-east-1";

const BUCKET_FORMS: &str = "http(s)://host[:port]/bucket for an S3-compatible server, or \
     https://bucket.s3.region.amazonaws.com for AWS";

/// Where an S3 bucket is and how to address it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct S3Location {
    /// `http(s)://host[:port]` of the service, without the bucket.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    /// Address the bucket as a host name (AWS) instead of the first path segment.
    pub virtual_host: bool,
}

impl S3Location {
    /// Parses a bucket URL. `env_region` is `AWS_REGION`, passed in so tests need not
    /// touch the process environment.
    pub fn parse(bucket_url: &str, env_region: Option<String>) -> Result<Self> {
        let bad = |why: &str| {
            Error::Config(format!(
                "bad S3 bucket {bucket_url:?}: {why}; expected {BUCKET_FORMS}"
            ))
        };
        let url = Url::parse(bucket_url).map_err(|e| bad(&e.to_string()))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(bad("the scheme must be http or https"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad(
                "credentials do not belong in the URL: give them with --access-key/--secret-key",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("the URL must not have a query or a fragment"));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host"))?;
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let env_region = env_region.filter(|r| !r.is_empty());
        let path = url.path().trim_matches('/');
        if !path.is_empty() {
            if path.contains('/') {
                return Err(bad(
                    "only the bucket may follow the host; the volume name already places \
                     the volume under its own prefix",
                ));
            }
            let region = aws_host_region(host)
                .flatten()
                .or(env_region)
                .unwrap_or_else(|| DEFAULT_REGION.to_string());
            return Ok(Self {
                endpoint: format!("{}://{authority}", url.scheme()),
                bucket: path.to_string(),
                region,
                virtual_host: false,
            });
        }
        // No path: the bucket must be in an AWS host name.
        let (bucket, region) = virtual_hosted(host).ok_or_else(|| bad("no bucket name"))?;
        let region = region
            .or(env_region)
            .unwrap_or_else(|| DEFAULT_REGION.to_string());
        let suffix = if host.ends_with(".cn") { ".cn" } else { "" };
        let service_host = format!("s3.{region}.amazonaws.com{suffix}");
        let endpoint = match url.port() {
            Some(p) => format!("{}://{service_host}:{p}", url.scheme()),
            None => format!("{}://{service_host}", url.scheme()),
        };
        Ok(Self {
            endpoint,
            // OpenDAL cannot put a dotted bucket name in a host name (TLS wildcard
            // certificates would not match it either): use path style for those.
            virtual_host: !bucket.contains('.'),
            bucket,
            region,
        })
    }

    /// The bucket's URL as a user would write it, for messages.
    pub fn url(&self) -> String {
        format!("{}/{}", self.endpoint, self.bucket)
    }

    /// URL of the bucket itself (its root), for bucket-level requests.
    fn bucket_request_url(&self) -> String {
        if self.virtual_host {
            match self.endpoint.split_once("://") {
                Some((scheme, rest)) => format!("{scheme}://{}.{rest}/", self.bucket),
                None => format!("{}/{}", self.endpoint, self.bucket),
            }
        } else {
            format!("{}/{}", self.endpoint, self.bucket)
        }
    }

    fn authority(&self) -> &str {
        self.endpoint
            .split_once("://")
            .map(|(_, a)| a)
            .unwrap_or(&self.endpoint)
    }
}

/// For a host under `amazonaws.com`: `Some(region)` when the host names one
/// (`s3.eu-west-1.amazonaws.com`, `s3-eu-west-1.amazonaws.com`), `Some(None)` when not.
fn aws_host_region(host: &str) -> Option<Option<String>> {
    let labels = aws_labels(host)?;
    let i = labels
        .iter()
        .rposition(|l| *l == "s3" || l.starts_with("s3-"))?;
    Some(region_after(&labels, i))
}

/// Labels of an AWS host name without the `amazonaws.com[.cn]` suffix.
fn aws_labels(host: &str) -> Option<Vec<&str>> {
    let rest = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    Some(rest.split('.').collect())
}

fn region_after(labels: &[&str], s3_index: usize) -> Option<String> {
    if let Some(r) = labels[s3_index].strip_prefix("s3-") {
        return Some(r.to_string()).filter(|r| !r.is_empty() && r != "external-1");
    }
    labels[s3_index + 1..]
        .iter()
        .find(|l| **l != "dualstack")
        .map(|l| l.to_string())
}

/// `bucket.s3.region.amazonaws.com` → (bucket, region).
fn virtual_hosted(host: &str) -> Option<(String, Option<String>)> {
    let labels = aws_labels(host)?;
    let i = labels
        .iter()
        .rposition(|l| *l == "s3" || l.starts_with("s3-"))?;
    if i == 0 {
        return None;
    }
    Some((labels[..i].join("."), region_after(&labels, i)))
}

/// Credentials of a store: both keys or none.
pub(crate) fn keys<'a>(
    access_key: Option<&'a str>,
    secret_key: Option<&'a str>,
) -> Result<Option<(&'a str, &'a str)>> {
    let ak = access_key.filter(|s| !s.is_empty());
    let sk = secret_key.filter(|s| !s.is_empty());
    match (ak, sk) {
        (Some(a), Some(s)) => Ok(Some((a, s))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(Error::Config(
            "an access key was given without a secret key: give both --access-key and \
             --secret-key, or neither for anonymous access"
                .into(),
        )),
        (None, Some(_)) => Err(Error::Config(
            "a secret key was given without an access key: give both --access-key and \
             --secret-key, or neither for anonymous access"
                .into(),
        )),
    }
}

/// An [`OpendalStore`] on an S3 bucket.
pub(crate) fn s3_store(loc: &S3Location, keys: Option<(&str, &str)>) -> Result<OpendalStore> {
    init_opendal();
    let mut b = ::opendal::services::S3::default()
        .root("/")
        .bucket(&loc.bucket)
        .endpoint(&loc.endpoint)
        .region(&loc.region)
        // Only what the volume was configured with: no env, no ~/.aws, no IMDS.
        .disable_config_load()
        .disable_ec2_metadata();
    if loc.virtual_host {
        b = b.enable_virtual_host_style();
    }
    b = match keys {
        Some((ak, sk)) => b.access_key_id(ak).secret_access_key(sk),
        None => b.skip_signature(),
    };
    let op = Operator::new(b)
        .map_err(|e| Error::Config(format!("cannot configure S3 bucket {}: {e}", loc.url())))?;
    let describe = format!("s3://{}/{}/", loc.authority(), loc.bucket);
    Ok(OpendalStore::with_backend(
        op,
        Backend::S3,
        describe,
        loc.url(),
    ))
}

/// Sends one bucket-level request, signed when there are keys.
async fn bucket_request(
    loc: &S3Location,
    keys: Option<(&str, &str)>,
    method: http::Method,
    body: Vec<u8>,
) -> Result<http::Response<Buffer>> {
    let url = loc.bucket_request_url();
    let req = http::Request::builder()
        .method(method)
        .uri(&url)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(Buffer::from(body))
        .map_err(|e| Error::Config(format!("bad S3 bucket URL {url}: {e}")))?;
    let (mut parts, body) = req.into_parts();
    if let Some((ak, sk)) = keys {
        let signer = Signer::new(
            Context::new(),
            StaticCredentialProvider::new(ak, sk),
            RequestSigner::new("s3", &loc.region),
        );
        signer
            .sign(&mut parts, None)
            .await
            .map_err(|e| Error::Config(format!("cannot sign a request to {url}: {e}")))?;
    }
    let req = http::Request::from_parts(parts, body);
    let transport = HttpTransporter::default();
    let send = transport.send(req);
    match tokio::time::timeout(OP_TIMEOUT, send).await {
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(e)) => Err(map_opendal_error(
            Backend::S3,
            &loc.url(),
            "bucket request",
            "",
            e,
        )),
        Err(_) => Err(Error::Temporary(format!(
            "no answer from {url} within {OP_TIMEOUT:?}"
        ))),
    }
}

fn response_error(loc: &S3Location, what: &str, resp: &http::Response<Buffer>) -> Error {
    let body = String::from_utf8_lossy(&resp.body().to_bytes()).into_owned();
    let code = body
        .split_once("<Code>")
        .and_then(|(_, r)| r.split_once("</Code>"))
        .map(|(c, _)| c.to_string())
        .unwrap_or_default();
    let status = resp.status();
    if status == http::StatusCode::FORBIDDEN {
        return Error::Permanent(format!(
            "access denied by {} ({code}) when trying to {what}: check the credentials \
             (--access-key/--secret-key) and that they may create buckets",
            loc.url()
        ));
    }
    let msg = format!(
        "cannot {what} {}: HTTP {status} {code} {}",
        loc.url(),
        body.chars().take(300).collect::<String>()
    );
    if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS {
        Error::Temporary(msg)
    } else {
        Error::Permanent(msg)
    }
}

/// Creates the S3 bucket of `loc` unless it exists. Returns whether it created it.
pub(crate) async fn create_s3_bucket(loc: &S3Location, keys: Option<(&str, &str)>) -> Result<bool> {
    init_opendal();
    let head = bucket_request(loc, keys, http::Method::HEAD, Vec::new()).await?;
    match head.status() {
        s if s.is_success() => return Ok(false),
        http::StatusCode::NOT_FOUND => {}
        _ => return Err(response_error(loc, "check bucket", &head)),
    }
    // Outside us-east-1 AWS wants the region in the body; other servers ignore it.
    let body = if loc.region == DEFAULT_REGION {
        Vec::new()
    } else {
        format!(
            "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
             <LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
            loc.region
        )
        .into_bytes()
    };
    let resp = bucket_request(loc, keys, http::Method::PUT, body).await?;
    if resp.status().is_success() {
        tracing::info!(bucket = %loc.url(), "created bucket");
        return Ok(true);
    }
    let text = String::from_utf8_lossy(&resp.body().to_bytes()).into_owned();
    if resp.status() == http::StatusCode::CONFLICT
        && (text.contains("BucketAlreadyOwnedByYou") || text.contains("BucketAlreadyExists"))
    {
        // Made by someone else in between (or owned by another account, which the
        // storage check will then report as access denied).
        return Ok(false);
    }
    if resp.status() == http::StatusCode::NOT_FOUND {
        return Err(Error::Config(no_such_bucket(&loc.url())));
    }
    Err(response_error(loc, "create bucket", &resp))
}
