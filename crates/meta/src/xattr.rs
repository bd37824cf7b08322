//! Extended attributes, stored one key per name under `A<ino>X<name>`.
//!
//! The two `system.posix_acl_*` names are not stored as xattrs: they are the xattr
//! form of the node's ACLs ([`crate::acl`]), and unsupported on a volume without ACLs.

use crate::acl::{AclType, Rule, XATTR_ACCESS, XATTR_DEFAULT};
use crate::error::{sys, Error, Result};
use crate::keys;
use crate::kv::prefix_end;
use crate::meta::Meta;
use crate::namespace::{attr_of, get_attr, put_attr};
use crate::types::*;
use libc::{E2BIG, EEXIST, EINVAL, ENODATA, ENOENT, ERANGE};

pub const XATTR_CREATE: i32 = 1;
pub const XATTR_REPLACE: i32 = 2;

fn check_xattr_name(name: &[u8]) -> Result<()> {
    if name.is_empty() {
        return sys(EINVAL);
    }
    if name.len() > MAX_XATTR_NAME {
        return sys(ERANGE);
    }
    Ok(())
}

impl Meta {
    pub fn setxattr(
        &self,
        ctx: &Ctx,
        ino: Ino,
        name: &[u8],
        value: &[u8],
        flags: i32,
    ) -> Result<()> {
        check_xattr_name(name)?;
        if value.len() > MAX_XATTR_VALUE {
            return sys(E2BIG);
        }
        if flags & !(XATTR_CREATE | XATTR_REPLACE) != 0 {
            return sys(EINVAL);
        }
        if let Some(typ) = AclType::from_xattr_name(name) {
            self.set_facl(ctx, ino, typ, Rule::from_xattr(value)?)?;
            return Ok(());
        }
        self.kv.txn(|tx| {
            let key = keys::xattr(ino, name);
            let mut got = tx.gets(&[keys::attr(ino), key.clone()])?.into_iter();
            let mut attr = attr_of(got.next().flatten())?;
            let exists = got.next().flatten().is_some();
            if flags & XATTR_CREATE != 0 && exists {
                return sys(EEXIST);
            }
            if flags & XATTR_REPLACE != 0 && !exists {
                return sys(ENODATA);
            }
            tx.set(&key, value)?;
            attr.ctime = Time::now();
            put_attr(tx, ino, &attr)
        })
    }

    pub fn getxattr(&self, ino: Ino, name: &[u8]) -> Result<Vec<u8>> {
        check_xattr_name(name)?;
        if let Some(typ) = AclType::from_xattr_name(name) {
            return Ok(self.get_facl(ino, typ)?.to_xattr());
        }
        // The attribute comes in the same batch, to tell ENODATA from ENOENT without a
        // second round trip.
        let batch = [keys::xattr(ino, name), keys::attr(ino)];
        self.kv.read(|tx| {
            let mut values = tx.gets(&batch)?.into_iter();
            match (values.next().flatten(), values.next().flatten()) {
                (Some(v), _) => Ok(v),
                (None, Some(_)) => sys(ENODATA),
                (None, None) => sys(ENOENT),
            }
        })
    }

    /// The values of xattrs `names` of each inode of `inos`, read in one batch (`None`
    /// where an inode has no such xattr). An inode that does not exist any more gets
    /// no answers at all (an empty list), so a cache is never told "no such xattr"
    /// about it. Not for ACLs, which are not stored as xattrs.
    pub fn xattrs_of(&self, inos: &[Ino], names: &[&[u8]]) -> Result<Vec<Vec<Option<Vec<u8>>>>> {
        let per_inode = 1 + names.len();
        let mut batch = Vec::with_capacity(inos.len() * per_inode);
        for &ino in inos {
            batch.push(keys::attr(ino));
            batch.extend(names.iter().map(|name| keys::xattr(ino, name)));
        }
        let values = self.kv.read(|tx| Ok(tx.gets(&batch)?))?;
        Ok(values
            .chunks(per_inode)
            .map(|v| match v {
                [Some(_), xattrs @ ..] => xattrs.to_vec(),
                _ => Vec::new(),
            })
            .collect())
    }

    /// Names, each followed by a zero byte (the `listxattr` format).
    pub fn listxattr(&self, ino: Ino) -> Result<Vec<u8>> {
        self.kv.read(|tx| {
            let attr = get_attr(tx, ino)?;
            let p = keys::xattr_prefix(ino);
            let mut out = Vec::new();
            for (id, name) in [
                (attr.access_acl, XATTR_ACCESS),
                (attr.default_acl, XATTR_DEFAULT),
            ] {
                if id != 0 {
                    out.extend_from_slice(name);
                    out.push(0);
                }
            }
            for (k, _) in tx.scan(&p, &prefix_end(&p), usize::MAX)? {
                out.extend_from_slice(&k[p.len()..]);
                out.push(0);
            }
            Ok(out)
        })
    }

    pub fn removexattr(&self, ctx: &Ctx, ino: Ino, name: &[u8]) -> Result<()> {
        check_xattr_name(name)?;
        if let Some(typ) = AclType::from_xattr_name(name) {
            let attr = self.get_attr(ino)?;
            if typ.id_of(&attr) == 0 {
                self.require_acl()?;
                return sys(ENODATA);
            }
            self.set_facl(ctx, ino, typ, None)?;
            return Ok(());
        }
        self.kv.txn(|tx| {
            let mut attr = get_attr(tx, ino)?;
            let key = keys::xattr(ino, name);
            if tx.get(&key)?.is_none() {
                return Err(Error::Sys(ENODATA));
            }
            tx.delete(&key)?;
            attr.ctime = Time::now();
            put_attr(tx, ino, &attr)
        })
    }
}
