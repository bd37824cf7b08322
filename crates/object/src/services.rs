//! The object stores OpenDAL provides beyond S3, named and addressed as JuiceFS names
//! them, so a volume's settings mean the same in either system:
//!
//! | `--storage` | `--bucket` | credentials |
//! | --- | --- | --- |
//! | `minio` | `http(s)://host:port/bucket` | access and secret key (S3, path-style) |
//! | `webdav` | `http(s)://host[:port]/path/` | access key = user, secret key = password |
//! | `sftp` | `sftp://[user@]host[:port]/path/` or JuiceFS's `host:path/` | access key = user; the SSH key from `SSH_PRIVATE_KEY_PATH` (or ssh's defaults) |
//! | `azblob` | `https://CONTAINER.core.windows.net` (JuiceFS's form) or `http(s)://host:port/ACCOUNT/CONTAINER` (Azurite and other emulators) | access key = account name, secret key = account key |
//! | `gcs` | `gs://BUCKET` | `GOOGLE_APPLICATION_CREDENTIALS` (a service account's JSON) |
//! | `swift` | `http(s)://host[:port]/v1/AUTH_ACCOUNT/CONTAINER` | secret key = auth token (or `OS_AUTH_TOKEN`) |
//! | `oss` | `https://BUCKET.oss-REGION.aliyuncs.com` | access and secret key |
//! | `cos` | `https://BUCKET-APPID.cos.REGION.myqcloud.com` | access and secret key |
//!
//! Each is parsed here into OpenDAL's builder, with a message naming the accepted form
//! when the bucket does not fit it. Credentials never go into a description or an error.
//! SFTP runs the system's `ssh` (OpenSSH) underneath, which cannot take a password:
//! a secret key given for `sftp` is refused with a message saying to use a key.

use crate::opendal::{init_opendal, Backend};
use crate::s3::{s3_store, S3Location};
use crate::{Error, OpendalStore, Result};
use ::opendal::{services, Operator};
use url::Url;

/// Credentials as a volume gives them (`--access-key`, `--secret-key`).
pub(crate) struct Keys<'a> {
    pub access: Option<&'a str>,
    pub secret: Option<&'a str>,
}

fn bad(storage: &str, bucket: &str, form: &str, why: &str) -> Error {
    Error::Config(format!(
        "bad {storage} bucket {bucket:?}: {why}; expected {form}"
    ))
}

/// `url` parsed as http(s), without credentials, query or fragment.
fn http_url(storage: &str, bucket: &str, form: &str) -> Result<Url> {
    let url = Url::parse(bucket).map_err(|e| bad(storage, bucket, form, &e.to_string()))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(bad(
            storage,
            bucket,
            form,
            "the scheme must be http or https",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            storage,
            bucket,
            form,
            "credentials do not belong in the URL: give them with --access-key/--secret-key",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() || url.host_str().is_none() {
        return Err(bad(
            storage,
            bucket,
            form,
            "a host and a path, nothing more",
        ));
    }
    Ok(url)
}

/// `scheme://host[:port]` of `url`.
fn origin(url: &Url) -> String {
    match url.port() {
        Some(p) => format!("{}://{}:{p}", url.scheme(), url.host_str().unwrap_or("")),
        None => format!("{}://{}", url.scheme(), url.host_str().unwrap_or("")),
    }
}

/// A path as OpenDAL's `root`: `/a/b/`.
fn root_of(path: &str) -> String {
    let inner = path.trim_matches('/');
    if inner.is_empty() {
        "/".into()
    } else {
        format!("/{inner}/")
    }
}

fn operator<B: ::opendal::Builder>(storage: &str, bucket: &str, b: B) -> Result<Operator> {
    init_opendal();
    Operator::new(b)
        .map_err(|e| Error::Config(format!("cannot configure {storage} bucket {bucket}: {e}")))
}

fn store(op: Operator, describe: String, location: &str) -> OpendalStore {
    OpendalStore::with_backend(op, Backend::Other, describe, location.to_string())
}

/// Both keys, or neither.
fn key_pair<'a>(storage: &str, keys: &Keys<'a>) -> Result<Option<(&'a str, &'a str)>> {
    match (keys.access, keys.secret) {
        (Some(a), Some(s)) => Ok(Some((a, s))),
        (None, None) => Ok(None),
        _ => Err(Error::Config(format!(
            "{storage} needs both --access-key and --secret-key (or ACCESS_KEY and SECRET_KEY), \
             or neither"
        ))),
    }
}

pub(crate) fn minio(bucket: &str, keys: &Keys) -> Result<OpendalStore> {
    const FORM: &str = "http(s)://host:port/bucket";
    let url = http_url("minio", bucket, FORM)?;
    let path = url.path().trim_matches('/');
    if path.is_empty() || path.contains('/') {
        return Err(bad(
            "minio",
            bucket,
            FORM,
            "the bucket is the one part of the path",
        ));
    }
    let loc = S3Location::parse(bucket, std::env::var("AWS_REGION").ok())?;
    s3_store(&loc, key_pair("minio", keys)?)
}

pub(crate) fn webdav(bucket: &str, keys: &Keys) -> Result<OpendalStore> {
    const FORM: &str = "http(s)://host[:port]/path/";
    let url = http_url("webdav", bucket, FORM)?;
    let mut b = services::Webdav::default()
        .endpoint(&origin(&url))
        .root(&root_of(url.path()));
    if let Some(user) = keys.access {
        b = b.username(user);
    }
    if let Some(password) = keys.secret {
        b = b.password(password);
    }
    let describe = format!("{}{}", origin(&url), root_of(url.path()));
    Ok(store(operator("webdav", bucket, b)?, describe, bucket))
}

/// `sftp://[user@]host[:port]/path` or `[user@]host:path` -> (user, host[:port], path).
fn parse_sftp(bucket: &str) -> Result<(Option<String>, String, String)> {
    const FORM: &str = "sftp://[user@]host[:port]/path/ or host:path/";
    if let Some(rest) = bucket.strip_prefix("sftp://") {
        let url = Url::parse(&format!("sftp://{rest}"))
            .map_err(|e| bad("sftp", bucket, FORM, &e.to_string()))?;
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("sftp", bucket, FORM, "no host"))?;
        if url.password().is_some() {
            return Err(bad("sftp", bucket, FORM, "no password in the URL"));
        }
        let host = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let user = Some(url.username().to_string()).filter(|u| !u.is_empty());
        return Ok((user, host, url.path().to_string()));
    }
    if bucket.contains("://") {
        return Err(bad("sftp", bucket, FORM, "the scheme must be sftp"));
    }
    let (host, path) = bucket
        .split_once(':')
        .ok_or_else(|| bad("sftp", bucket, FORM, "no ':' between host and path"))?;
    let (user, host) = match host.split_once('@') {
        Some((u, h)) => (Some(u.to_string()), h.to_string()),
        None => (None, host.to_string()),
    };
    if host.is_empty() {
        return Err(bad("sftp", bucket, FORM, "no host"));
    }
    Ok((user, host, path.to_string()))
}

pub(crate) fn sftp(bucket: &str, keys: &Keys) -> Result<OpendalStore> {
    if keys.secret.is_some() {
        return Err(Error::Config(
            "sftp storage logs in with an SSH key, not a password: drop --secret-key \
             (SECRET_KEY) and set SSH_PRIVATE_KEY_PATH to the private key (or rely on ssh's \
             default keys)"
                .into(),
        ));
    }
    let (url_user, host, path) = parse_sftp(bucket)?;
    let user = keys.access.map(str::to_string).or(url_user);
    let root = if path.starts_with('/') {
        root_of(&path)
    } else {
        // JuiceFS's `host:path` is relative to the user's home, as for scp.
        root_of(&path).trim_start_matches('/').to_string()
    };
    let mut b = services::Sftp::default()
        .endpoint(&format!("ssh://{host}"))
        .root(&root)
        // The host must already be known (known_hosts): a store is no place to trust a
        // new host key silently.
        .known_hosts_strategy("strict");
    if let Some(user) = &user {
        b = b.user(user);
    }
    if let Ok(key) = std::env::var("SSH_PRIVATE_KEY_PATH") {
        if !key.is_empty() {
            b = b.key(&key);
        }
    }
    let describe = format!(
        "sftp://{}{host}{}",
        user.as_deref().map(|u| format!("{u}@")).unwrap_or_default(),
        if root.starts_with('/') {
            root.clone()
        } else {
            format!("/~/{root}")
        }
    );
    Ok(store(operator("sftp", bucket, b)?, describe, bucket))
}

/// (endpoint, container) of an Azure Blob bucket; `account` is the access key.
fn parse_azblob(bucket: &str, account: Option<&str>) -> Result<(String, String)> {
    const FORM: &str = "https://CONTAINER.core.windows.net (with the account name as \
                        --access-key) or http(s)://host:port/ACCOUNT/CONTAINER";
    let url = http_url("azblob", bucket, FORM)?;
    let host = url.host_str().unwrap_or("");
    let parts: Vec<&str> = url.path().split('/').filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        [] => {
            // JuiceFS's form: the container is the first label of the host.
            let (container, endpoint) = host
                .split_once('.')
                .filter(|(c, e)| !c.is_empty() && e.contains('.'))
                .ok_or_else(|| bad("azblob", bucket, FORM, "no container"))?;
            let account = account.ok_or_else(|| {
                bad(
                    "azblob",
                    bucket,
                    FORM,
                    "the account name (--access-key) is needed",
                )
            })?;
            Ok((
                format!("{}://{account}.blob.{endpoint}", url.scheme()),
                container.to_string(),
            ))
        }
        [account, container] => Ok((format!("{}/{account}", origin(&url)), container.to_string())),
        [container] if host.contains(".blob.") => Ok((origin(&url), container.to_string())),
        _ => Err(bad("azblob", bucket, FORM, "cannot tell the container")),
    }
}

pub(crate) fn azblob(bucket: &str, keys: &Keys) -> Result<OpendalStore> {
    let (endpoint, container) = parse_azblob(bucket, keys.access)?;
    let mut b = services::Azblob::default()
        .endpoint(&endpoint)
        .container(&container)
        .root("/");
    match key_pair("azblob", keys)? {
        Some((account, key)) => b = b.account_name(account).account_key(key),
        None => {
            if let Ok(conn) = std::env::var("AZURE_STORAGE_CONNECTION_STRING") {
                b = services::Azblob::from_connection_string(&conn)
                    .map_err(|e| {
                        Error::Config(format!("bad AZURE_STORAGE_CONNECTION_STRING: {e}"))
                    })?
                    .container(&container)
                    .root("/");
            }
        }
    }
    let describe = format!("{endpoint}/{container}/");
    Ok(store(operator("azblob", bucket, b)?, describe, bucket))
}

pub(crate) fn gcs(bucket: &str) -> Result<OpendalStore> {
    const FORM: &str = "gs://BUCKET";
    let name = bucket
        .strip_prefix("gs://")
        .map(|b| b.trim_end_matches('/'))
        .filter(|b| !b.is_empty() && !b.contains('/'))
        .ok_or_else(|| bad("gcs", bucket, FORM, "not a bucket URL"))?;
    let mut b = services::Gcs::default().bucket(name).root("/");
    if let Ok(path) = std::env::var("GOOGLE_APPLICATION_CREDENTIALS") {
        if !path.is_empty() {
            b = b.credential_path(&path);
        }
    }
    Ok(store(
        operator("gcs", bucket, b)?,
        format!("gs://{name}/"),
        bucket,
    ))
}

/// (storage URL of the account, container) of a Swift bucket.
fn parse_swift(bucket: &str) -> Result<(String, String)> {
    const FORM: &str = "http(s)://host[:port]/v1/AUTH_ACCOUNT/CONTAINER";
    let url = http_url("swift", bucket, FORM)?;
    let path = url.path().trim_matches('/');
    let (account, container) = path
        .rsplit_once('/')
        .filter(|(a, c)| !a.is_empty() && !c.is_empty())
        .ok_or_else(|| bad("swift", bucket, FORM, "no account and container"))?;
    Ok((format!("{}/{account}", origin(&url)), container.to_string()))
}

pub(crate) fn swift(bucket: &str, keys: &Keys) -> Result<OpendalStore> {
    let (endpoint, container) = parse_swift(bucket)?;
    let token = keys
        .secret
        .map(str::to_string)
        .or_else(|| std::env::var("OS_AUTH_TOKEN").ok())
        .ok_or_else(|| {
            Error::Config(
                "swift needs an auth token: give it as --secret-key (SECRET_KEY) or \
                 OS_AUTH_TOKEN"
                    .into(),
            )
        })?;
    let b = services::Swift::default()
        .endpoint(&endpoint)
        .container(&container)
        .root("/")
        .token(&token);
    let describe = format!("{endpoint}/{container}/");
    Ok(store(operator("swift", bucket, b)?, describe, bucket))
}

/// (endpoint, bucket) of a bucket addressed as `https://BUCKET.HOST`, where HOST must
/// start with `host_start` (`oss-` for Aliyun, `cos.` for Tencent).
fn virtual_hosted(
    storage: &str,
    bucket: &str,
    form: &str,
    host_start: &str,
) -> Result<(String, String)> {
    let url = http_url(storage, bucket, form)?;
    if !url.path().trim_matches('/').is_empty() {
        return Err(bad(
            storage,
            bucket,
            form,
            "the bucket goes in the host name",
        ));
    }
    let host = url.host_str().unwrap_or("");
    let (name, service) = host
        .split_once('.')
        .filter(|(n, s)| !n.is_empty() && s.starts_with(host_start))
        .ok_or_else(|| bad(storage, bucket, form, "no bucket in the host name"))?;
    let endpoint = match url.port() {
        Some(p) => format!("{}://{service}:{p}", url.scheme()),
        None => format!("{}://{service}", url.scheme()),
    };
    Ok((endpoint, name.to_string()))
}

pub(crate) fn oss(bucket: &str, keys: &Keys) -> Result<OpendalStore> {
    let (endpoint, name) = virtual_hosted(
        "oss",
        bucket,
        "https://BUCKET.oss-REGION.aliyuncs.com",
        "oss-",
    )?;
    let mut b = services::Oss::default()
        .endpoint(&endpoint)
        .bucket(&name)
        .root("/");
    if let Some((ak, sk)) = key_pair("oss", keys)? {
        b = b.access_key_id(ak).access_key_secret(sk);
    }
    let describe = format!("oss://{name}/");
    Ok(store(operator("oss", bucket, b)?, describe, bucket))
}

pub(crate) fn cos(bucket: &str, keys: &Keys) -> Result<OpendalStore> {
    let (endpoint, name) = virtual_hosted(
        "cos",
        bucket,
        "https://BUCKET-APPID.cos.REGION.myqcloud.com",
        "cos.",
    )?;
    let mut b = services::Cos::default()
        .endpoint(&endpoint)
        .bucket(&name)
        .root("/")
        .disable_config_load();
    if let Some((ak, sk)) = key_pair("cos", keys)? {
        b = b.secret_id(ak).secret_key(sk);
    }
    let describe = format!("cos://{name}/");
    Ok(store(operator("cos", bucket, b)?, describe, bucket))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ObjectStore;

    #[test]
    fn sftp_buckets() {
        assert_eq!(
            parse_sftp("sftp://tom@10.0.0.1:2222/data/jfs/").unwrap(),
            (
                Some("tom".into()),
                "10.0.0.1:2222".into(),
                "/data/jfs/".into()
            )
        );
        assert_eq!(
            parse_sftp("10.0.0.1:myjfs/").unwrap(),
            (None, "10.0.0.1".into(), "myjfs/".into())
        );
        assert_eq!(
            parse_sftp("tom@host:/abs").unwrap(),
            (Some("tom".into()), "host".into(), "/abs".into())
        );
        for bad in ["host-without-path", "http://h/x", ":path", "sftp:///x"] {
            let e = parse_sftp(bad).unwrap_err().to_string();
            assert!(e.contains("expected sftp://"), "{bad}: {e}");
        }
        let e = sftp(
            "h:p",
            &Keys {
                access: Some("u"),
                secret: Some("pw"),
            },
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.contains("SSH_PRIVATE_KEY_PATH") && !e.contains("pw"),
            "{e}"
        );
    }

    #[test]
    fn azure_buckets() {
        assert_eq!(
            parse_azblob("https://myjfs.core.windows.net", Some("acct")).unwrap(),
            ("https://acct.blob.core.windows.net".into(), "myjfs".into())
        );
        assert_eq!(
            parse_azblob("http://127.0.0.1:10000/devstoreaccount1/vols", None).unwrap(),
            (
                "http://127.0.0.1:10000/devstoreaccount1".into(),
                "vols".into()
            )
        );
        assert_eq!(
            parse_azblob("https://acct.blob.core.windows.net/vols", None).unwrap(),
            ("https://acct.blob.core.windows.net".into(), "vols".into())
        );
        assert!(parse_azblob("https://myjfs.core.windows.net", None)
            .unwrap_err()
            .to_string()
            .contains("--access-key"));
        assert!(parse_azblob("ftp://x/y/z", None).is_err());
    }

    #[test]
    fn swift_oss_and_cos_buckets() {
        assert_eq!(
            parse_swift("http://127.0.0.1:8080/v1/AUTH_test/vols").unwrap(),
            ("http://127.0.0.1:8080/v1/AUTH_test".into(), "vols".into())
        );
        assert!(parse_swift("http://127.0.0.1:8080/").is_err());
        assert_eq!(
            virtual_hosted(
                "oss",
                "https://b1.oss-cn-hangzhou.aliyuncs.com",
                "F",
                "oss-"
            )
            .unwrap(),
            ("https://oss-cn-hangzhou.aliyuncs.com".into(), "b1".into())
        );
        assert_eq!(
            virtual_hosted(
                "cos",
                "https://b-125.cos.ap-beijing.myqcloud.com",
                "F",
                "cos."
            )
            .unwrap(),
            ("https://cos.ap-beijing.myqcloud.com".into(), "b-125".into())
        );
        assert!(virtual_hosted("oss", "https://aliyuncs.com/b", "F", "oss-").is_err());
    }

    #[test]
    fn stores_build_without_io_and_hide_secrets() {
        let keys = Keys {
            access: Some("AK"),
            secret: Some("VERY-SECRET"),
        };
        let built = [
            minio("http://127.0.0.1:9000/b", &keys).map(|s| s.describe()),
            webdav("http://127.0.0.1:8080/dav/", &keys).map(|s| s.describe()),
            // An Azure account key is base64.
            azblob(
                "http://127.0.0.1:10000/devstoreaccount1/vols",
                &Keys {
                    access: Some("devstoreaccount1"),
                    secret: Some("VkVSWS1TRUNSRVQ="),
                },
            )
            .map(|s| s.describe()),
            swift("http://127.0.0.1:8080/v1/AUTH_t/c", &keys).map(|s| s.describe()),
            oss("https://b.oss-cn-hangzhou.aliyuncs.com", &keys).map(|s| s.describe()),
            cos("https://b-1.cos.ap-beijing.myqcloud.com", &keys).map(|s| s.describe()),
        ];
        for b in built {
            let d = b.unwrap();
            assert!(
                !d.contains("VERY-SECRET") && !d.contains("VkVSWS1TRUNSRVQ=") && d.ends_with('/'),
                "{d}"
            );
        }
        assert!(minio("http://127.0.0.1:9000/", &keys).is_err());
        assert!(minio("http://127.0.0.1:9000/a/b", &keys).is_err());
        assert!(webdav("ftp://x/", &keys).is_err());
        assert!(gcs("gs://").is_err() && gcs("s3://b").is_err());
        let half = Keys {
            access: Some("AK"),
            secret: None,
        };
        assert!(oss("https://b.oss-cn-hangzhou.aliyuncs.com", &half).is_err());
    }
}
