//! POSIX access control lists: access ACLs that grant rights to named users and groups,
//! and default ACLs that directories pass on to what is created in them.
//!
//! The design follows JuiceFS so volumes move between the two systems: a volume enables
//! ACLs once, at `format --enable-acl`; a rule (owner, group, mask and other permissions
//! plus the named entries) is stored once under `R<id u32>` and never changed, and an
//! inode's attribute carries the ids of its access and default rules (0: none). Rules are
//! deduplicated through an in-memory cache, so a million files inheriting one default
//! ACL share one record. A file whose ACL says no more than its mode bits keeps no rule
//! at all: the mode is the ACL.
//!
//! The rules of Linux apply (see acl(5)): the group bits of the mode show the mask when
//! there is one; chmod changes owner, mask (or group) and other; a new node in a
//! directory with a default ACL gets it masked by the mode asked for, and the umask is
//! ignored. Through FUSE the kernel checks access with the ACLs it reads as the
//! `system.posix_acl_*` xattrs; [`Rule::permits`] serves callers that ask metadata to
//! check for them.

use crate::error::{sys, Error, Result};
use crate::keys;
use crate::kv::{prefix_end, KvTxn};
use crate::meta::Meta;
use crate::namespace::{get_attr, put_attr};
use crate::types::*;
use libc::{EACCES, EINVAL, ENODATA, EOPNOTSUPP, EPERM};
use std::collections::HashMap;
use std::sync::Arc;

/// A permission not set (JuiceFS's marker; a minimal ACL has no mask).
pub const UNSET: u16 = 0xFFFF;

pub const XATTR_ACCESS: &[u8] = b"system.posix_acl_access";
pub const XATTR_DEFAULT: &[u8] = b"system.posix_acl_default";

/// The counter that hands out rule ids (JuiceFS's name).
const ACL_COUNTER: &str = "aclMaxId";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AclType {
    Access,
    Default,
}

impl AclType {
    /// The ACL a `system.posix_acl_*` xattr name stands for.
    pub fn from_xattr_name(name: &[u8]) -> Option<AclType> {
        match name {
            XATTR_ACCESS => Some(AclType::Access),
            XATTR_DEFAULT => Some(AclType::Default),
            _ => None,
        }
    }

    pub(crate) fn id_of(self, attr: &Attr) -> u32 {
        match self {
            AclType::Access => attr.access_acl,
            AclType::Default => attr.default_acl,
        }
    }
}

/// A named user or group and its rights (rwx as 4, 2, 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AclEntry {
    pub id: u32,
    pub perm: u16,
}

/// One ACL. Named entries are kept sorted by id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    pub owner: u16,
    pub group: u16,
    pub mask: u16,
    pub other: u16,
    pub named_users: Vec<AclEntry>,
    pub named_groups: Vec<AclEntry>,
}

// The tags of the Linux xattr form (include/uapi/linux/posix_acl.h).
const TAG_USER_OBJ: u16 = 0x01;
const TAG_USER: u16 = 0x02;
const TAG_GROUP_OBJ: u16 = 0x04;
const TAG_GROUP: u16 = 0x08;
const TAG_MASK: u16 = 0x10;
const TAG_OTHER: u16 = 0x20;
const XATTR_VERSION: u32 = 2;
const UNDEFINED_ID: u32 = u32::MAX;

impl Rule {
    /// The ACL equivalent to permission bits.
    pub fn from_mode(mode: u16) -> Rule {
        Rule {
            owner: (mode >> 6) & 7,
            group: (mode >> 3) & 7,
            mask: UNSET,
            other: mode & 7,
            named_users: Vec::new(),
            named_groups: Vec::new(),
        }
    }

    /// JuiceFS's record: owner, group, mask, other (u16 each), then the named users and
    /// the named groups, each a u32 count and (id u32, perm u16) pairs; big-endian.
    pub fn encode(&self) -> Vec<u8> {
        let named = self.named_users.len() + self.named_groups.len();
        let mut b = Vec::with_capacity(16 + named * 6);
        for p in [self.owner, self.group, self.mask, self.other] {
            b.extend_from_slice(&p.to_be_bytes());
        }
        for list in [&self.named_users, &self.named_groups] {
            b.extend_from_slice(&(list.len() as u32).to_be_bytes());
            for e in list {
                b.extend_from_slice(&e.id.to_be_bytes());
                b.extend_from_slice(&e.perm.to_be_bytes());
            }
        }
        b
    }

    pub fn decode(b: &[u8]) -> Result<Rule> {
        let bad = || Error::Corrupt(format!("ACL record of {} bytes", b.len()));
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<&[u8]> {
            let s = b.get(at..at + n).ok_or_else(bad)?;
            at += n;
            Ok(s)
        };
        let mut perms = [0u16; 4];
        for p in perms.iter_mut() {
            *p = u16::from_be_bytes(take(2)?.try_into().unwrap());
        }
        let mut lists = [Vec::new(), Vec::new()];
        for list in lists.iter_mut() {
            let n = u32::from_be_bytes(take(4)?.try_into().unwrap()) as usize;
            if n > b.len() / 6 {
                return Err(bad());
            }
            for _ in 0..n {
                let id = u32::from_be_bytes(take(4)?.try_into().unwrap());
                let perm = u16::from_be_bytes(take(2)?.try_into().unwrap());
                list.push(AclEntry { id, perm });
            }
        }
        let [named_users, named_groups] = lists;
        Ok(Rule {
            owner: perms[0],
            group: perms[1],
            mask: perms[2],
            other: perms[3],
            named_users,
            named_groups,
        })
    }

    /// Says no more than permission bits do.
    pub fn is_minimal(&self) -> bool {
        self.mask == UNSET && self.named_users.is_empty() && self.named_groups.is_empty()
    }

    /// The permission bits this ACL shows as the mode (the mask in the group bits).
    pub fn mode_bits(&self) -> u16 {
        let group = if self.mask == UNSET {
            self.group
        } else {
            self.mask
        };
        ((self.owner & 7) << 6) | ((group & 7) << 3) | (self.other & 7)
    }

    /// This ACL after a chmod to `mode`: owner, mask (or group without a mask), other.
    pub fn with_mode(&self, mode: u16) -> Rule {
        let mut r = self.clone();
        r.owner = (mode >> 6) & 7;
        if r.mask == UNSET {
            r.group = (mode >> 3) & 7;
        } else {
            r.mask = (mode >> 3) & 7;
        }
        r.other = mode & 7;
        r
    }

    /// The access ACL and permission bits of a node created with `mode` in a directory
    /// whose default ACL this is (Linux's posix_acl_create_masq): owner and other are
    /// limited by the mode, and so is the mask, or the owning group without a mask.
    pub fn inherited(&self, mode: u16) -> (Rule, u16) {
        let mut r = self.clone();
        r.owner &= (mode >> 6) & 7;
        r.other &= mode & 7;
        if r.mask == UNSET {
            r.group &= (mode >> 3) & 7;
        } else {
            r.mask &= (mode >> 3) & 7;
        }
        let bits = (mode & 0o7000) | r.mode_bits();
        (r, bits)
    }

    /// Whether `ctx` gets every right in `want` (rwx as 4, 2, 1) on a node it governs
    /// (acl(5), "access check algorithm"). Root is the caller's business.
    pub fn permits(&self, ctx: &Ctx, attr: &Attr, want: u16) -> bool {
        let masked = |perm: u16| {
            if self.mask == UNSET {
                perm
            } else {
                perm & self.mask
            }
        };
        if ctx.uid == attr.uid {
            return self.owner & want == want;
        }
        if let Some(e) = self.named_users.iter().find(|e| e.id == ctx.uid) {
            return masked(e.perm) & want == want;
        }
        let mut in_some_group = false;
        if ctx.in_group(attr.gid) {
            in_some_group = true;
            if masked(self.group) & want == want {
                return true;
            }
        }
        for e in self.named_groups.iter().filter(|e| ctx.in_group(e.id)) {
            in_some_group = true;
            if masked(e.perm) & want == want {
                return true;
            }
        }
        !in_some_group && self.other & want == want
    }

    /// Parses the `system.posix_acl_*` xattr form. `None`: an ACL without entries,
    /// which removes the ACL. The entries must form a valid ACL (posix_acl_valid).
    pub fn from_xattr(value: &[u8]) -> Result<Option<Rule>> {
        if value.len() < 4 || !(value.len() - 4).is_multiple_of(8) {
            return sys(EINVAL);
        }
        if u32::from_le_bytes(value[..4].try_into().unwrap()) != XATTR_VERSION {
            return sys(EOPNOTSUPP);
        }
        if value.len() == 4 {
            return Ok(None);
        }
        let mut r = Rule {
            owner: UNSET,
            group: UNSET,
            mask: UNSET,
            other: UNSET,
            named_users: Vec::new(),
            named_groups: Vec::new(),
        };
        // Entries come in tag order, named ones by increasing id, each base tag once.
        let mut last: Option<(u16, u32)> = None;
        for e in value[4..].chunks_exact(8) {
            let tag = u16::from_le_bytes([e[0], e[1]]);
            let perm = u16::from_le_bytes([e[2], e[3]]);
            let id = u32::from_le_bytes(e[4..8].try_into().unwrap());
            let order = (
                tag,
                if tag == TAG_USER || tag == TAG_GROUP {
                    id
                } else {
                    0
                },
            );
            if perm & !7 != 0 || last.is_some_and(|l| order <= l) {
                return sys(EINVAL);
            }
            last = Some(order);
            match tag {
                TAG_USER_OBJ => r.owner = perm,
                TAG_USER => r.named_users.push(AclEntry { id, perm }),
                TAG_GROUP_OBJ => r.group = perm,
                TAG_GROUP => r.named_groups.push(AclEntry { id, perm }),
                TAG_MASK => r.mask = perm,
                TAG_OTHER => r.other = perm,
                _ => return sys(EINVAL),
            }
        }
        let named = !r.named_users.is_empty() || !r.named_groups.is_empty();
        if r.owner == UNSET || r.group == UNSET || r.other == UNSET || (named && r.mask == UNSET) {
            return sys(EINVAL);
        }
        Ok(Some(r))
    }

    /// The `system.posix_acl_*` xattr form.
    pub fn to_xattr(&self) -> Vec<u8> {
        let mut entries: Vec<(u16, u16, u32)> = vec![(TAG_USER_OBJ, self.owner, UNDEFINED_ID)];
        entries.extend(self.named_users.iter().map(|e| (TAG_USER, e.perm, e.id)));
        entries.push((TAG_GROUP_OBJ, self.group, UNDEFINED_ID));
        entries.extend(self.named_groups.iter().map(|e| (TAG_GROUP, e.perm, e.id)));
        if self.mask != UNSET {
            entries.push((TAG_MASK, self.mask, UNDEFINED_ID));
        }
        entries.push((TAG_OTHER, self.other, UNDEFINED_ID));
        let mut b = Vec::with_capacity(4 + 8 * entries.len());
        b.extend_from_slice(&XATTR_VERSION.to_le_bytes());
        for (tag, perm, id) in entries {
            b.extend_from_slice(&tag.to_le_bytes());
            b.extend_from_slice(&(perm & 7).to_le_bytes());
            b.extend_from_slice(&id.to_le_bytes());
        }
        b
    }
}

/// The rules this client has seen, both ways. Rules never change once written, so
/// entries never go stale.
#[derive(Default)]
pub(crate) struct RuleCache {
    by_id: HashMap<u32, Arc<Rule>>,
    ids: HashMap<Rule, u32>,
    /// Every stored rule has been read once (done before the first new rule is made).
    loaded: bool,
}

impl RuleCache {
    fn remember(&mut self, id: u32, rule: Rule) {
        self.ids.entry(rule.clone()).or_insert(id);
        self.by_id.insert(id, Arc::new(rule));
    }
}

/// Rules a transaction attempt created; cached once it commits.
pub(crate) type NewRules = Vec<(u32, Rule)>;

impl Meta {
    pub fn acl_enabled(&self) -> bool {
        self.get_format().is_ok_and(|f| f.enable_acl)
    }

    pub(crate) fn require_acl(&self) -> Result<()> {
        if !self.acl_enabled() {
            return sys(EOPNOTSUPP);
        }
        Ok(())
    }

    /// The rule stored under `id`.
    pub(crate) fn acl_rule(&self, tx: &mut dyn KvTxn, id: u32) -> Result<Arc<Rule>> {
        if let Some(r) = self.acls.read().by_id.get(&id) {
            return Ok(r.clone());
        }
        let rule = match tx.get(&keys::acl(id))? {
            Some(v) => Rule::decode(&v)?,
            None => {
                return Err(Error::Corrupt(format!(
                    "ACL {id} is referenced but missing"
                )))
            }
        };
        let mut cache = self.acls.write();
        cache.remember(id, rule);
        Ok(cache.by_id[&id].clone())
    }

    /// The id of `rule`, writing it as a new rule in `tx` if no stored one is equal.
    /// Ids made here go to `made`, to be cached when the transaction commits.
    pub(crate) fn acl_id(
        &self,
        tx: &mut dyn KvTxn,
        rule: &Rule,
        made: &mut NewRules,
    ) -> Result<u32> {
        if let Some(id) = self.acls.read().ids.get(rule) {
            return Ok(*id);
        }
        if let Some((id, _)) = made.iter().find(|(_, r)| r == rule) {
            return Ok(*id);
        }
        let id = tx.incr_by(&keys::counter(ACL_COUNTER), 1)?;
        let id =
            u32::try_from(id).map_err(|_| Error::Corrupt(format!("ACL id counter at {id}")))?;
        tx.set(&keys::acl(id), &rule.encode())?;
        made.push((id, rule.clone()));
        Ok(id)
    }

    /// Caches the rules a committed transaction made.
    pub(crate) fn remember_rules(&self, made: NewRules) {
        if made.is_empty() {
            return;
        }
        let mut cache = self.acls.write();
        for (id, rule) in made {
            cache.remember(id, rule);
        }
    }

    /// Reads every stored rule once, so a client does not store a second copy of a
    /// rule another client made.
    fn load_rules(&self) -> Result<()> {
        if self.acls.read().loaded {
            return Ok(());
        }
        let (begin, end) = (keys::acl_prefix(), prefix_end(&keys::acl_prefix()));
        let rows = self.kv.read(|tx| Ok(tx.scan(&begin, &end, usize::MAX)?))?;
        let mut cache = self.acls.write();
        for (k, v) in rows {
            let Some(id) = k
                .get(1..5)
                .map(|b| u32::from_be_bytes(b.try_into().unwrap()))
            else {
                continue;
            };
            cache.remember(id, Rule::decode(&v)?);
        }
        cache.loaded = true;
        Ok(())
    }

    /// Whether `ctx` has `want` rights on a node with an access ACL; `None` when the
    /// node has none (its mode decides).
    pub(crate) fn acl_permits(
        &self,
        tx: &mut dyn KvTxn,
        ctx: &Ctx,
        attr: &Attr,
        want: u32,
    ) -> Result<Option<bool>> {
        if attr.access_acl == 0 || ctx.uid == 0 {
            return Ok(None);
        }
        let rule = self.acl_rule(tx, attr.access_acl)?;
        Ok(Some(rule.permits(ctx, attr, want as u16)))
    }

    /// The ACL of one kind on a node: ENODATA when it has none.
    pub fn get_facl(&self, ino: Ino, typ: AclType) -> Result<Rule> {
        self.require_acl()?;
        self.kv.read(|tx| {
            let attr = get_attr(tx, ino)?;
            match typ.id_of(&attr) {
                0 => sys(ENODATA),
                id => Ok((*self.acl_rule(tx, id)?).clone()),
            }
        })
    }

    /// Sets (or with `None` removes) the ACL of one kind on a node. An access ACL sets
    /// the mode bits it implies; one equivalent to a mode is kept as the mode alone.
    /// Only the owner (or root) may do this; a default ACL needs a directory.
    pub fn set_facl(&self, ctx: &Ctx, ino: Ino, typ: AclType, rule: Option<Rule>) -> Result<Attr> {
        self.require_acl()?;
        if rule.as_ref().is_some_and(|r| !r.is_minimal()) {
            self.load_rules()?;
        }
        let mut made = NewRules::new();
        let attr = self.kv.txn(|tx| {
            made.clear();
            let mut attr = get_attr(tx, ino)?;
            if ctx.check_permission && ctx.uid != 0 && ctx.uid != attr.uid {
                return sys(EPERM);
            }
            match typ {
                AclType::Access => match &rule {
                    Some(r) => {
                        attr.mode = (attr.mode & 0o7000) | r.mode_bits();
                        // As chmod would (Linux's posix_acl_update_mode). The caller's
                        // groups must be known here, also through FUSE.
                        if ctx.uid != 0 && !ctx.in_group(attr.gid) {
                            attr.mode &= !0o2000;
                        }
                        attr.access_acl = if r.is_minimal() {
                            0
                        } else {
                            self.acl_id(tx, r, &mut made)?
                        };
                    }
                    None => attr.access_acl = 0,
                },
                AclType::Default => {
                    if attr.typ != FileType::Directory {
                        return if rule.is_some() {
                            sys(EACCES)
                        } else {
                            Ok(attr)
                        };
                    }
                    attr.default_acl = match &rule {
                        Some(r) => self.acl_id(tx, r, &mut made)?,
                        None => 0,
                    };
                }
            }
            attr.ctime = Time::now();
            put_attr(tx, ino, &attr)?;
            Ok(attr)
        })?;
        self.remember_rules(std::mem::take(&mut made));
        Ok(attr)
    }

    /// The mode and ACL ids of a node created in a directory with `pattr`, asked with
    /// `mode` (permission bits) and `umask`: the default ACL when the directory has one
    /// (the umask is then ignored), otherwise the mode less the umask.
    pub(crate) fn inherit_acl(
        &self,
        tx: &mut dyn KvTxn,
        pattr: &Attr,
        attr: &mut Attr,
        mode: u16,
        umask: u16,
        made: &mut NewRules,
    ) -> Result<()> {
        if pattr.default_acl == 0 || attr.typ == FileType::Symlink {
            attr.mode = mode & !(umask & 0o777);
            return Ok(());
        }
        let default = self.acl_rule(tx, pattr.default_acl)?;
        let (access, bits) = default.inherited(mode);
        attr.mode = bits;
        if !access.is_minimal() {
            attr.access_acl = self.acl_id(tx, &access, made)?;
        }
        if attr.typ == FileType::Directory {
            attr.default_acl = pattr.default_acl;
        }
        Ok(())
    }

    /// The access ACL after a chmod of a node that has one (its id; the rule changes).
    pub(crate) fn chmod_acl(
        &self,
        tx: &mut dyn KvTxn,
        attr: &mut Attr,
        mode: u16,
        made: &mut NewRules,
    ) -> Result<()> {
        if attr.access_acl != 0 {
            let rule = self.acl_rule(tx, attr.access_acl)?.with_mode(mode);
            attr.access_acl = self.acl_id(tx, &rule, made)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(owner: u16, group: u16, mask: u16, other: u16) -> Rule {
        Rule {
            owner,
            group,
            mask,
            other,
            named_users: Vec::new(),
            named_groups: Vec::new(),
        }
    }

    #[test]
    fn record_round_trips_in_juicefs_layout() {
        let mut r = rule(7, 5, 7, 0);
        r.named_users.push(AclEntry { id: 1000, perm: 6 });
        r.named_groups.push(AclEntry { id: 50, perm: 4 });
        let b = r.encode();
        assert_eq!(b.len(), 8 + 4 + 6 + 4 + 6);
        assert_eq!(&b[..8], &[0, 7, 0, 5, 0, 7, 0, 0]);
        assert_eq!(&b[8..12], &[0, 0, 0, 1]);
        assert_eq!(&b[12..18], &[0, 0, 0x03, 0xe8, 0, 6]);
        assert_eq!(Rule::decode(&b).unwrap(), r);
        assert!(Rule::decode(&b[..b.len() - 1]).is_err());
        assert!(Rule::decode(&[0, 7, 0, 5, 0xff, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn xattr_form_round_trips_and_rejects_invalid_acls() {
        let mut r = rule(6, 4, 6, 4);
        r.named_users.push(AclEntry { id: 1000, perm: 6 });
        r.named_users.push(AclEntry { id: 1001, perm: 4 });
        r.named_groups.push(AclEntry { id: 7, perm: 2 });
        let x = r.to_xattr();
        assert_eq!(x.len(), 4 + 7 * 8);
        assert_eq!(Rule::from_xattr(&x).unwrap(), Some(r.clone()));
        assert_eq!(Rule::from_xattr(&2u32.to_le_bytes()).unwrap(), None);
        let entry = |tag: u16, perm: u16, id: u32| {
            let mut e = tag.to_le_bytes().to_vec();
            e.extend_from_slice(&perm.to_le_bytes());
            e.extend_from_slice(&id.to_le_bytes());
            e
        };
        let acl = |entries: &[Vec<u8>]| {
            let mut b = 2u32.to_le_bytes().to_vec();
            for e in entries {
                b.extend_from_slice(e);
            }
            b
        };
        let base = [
            entry(TAG_USER_OBJ, 6, UNDEFINED_ID),
            entry(TAG_GROUP_OBJ, 4, UNDEFINED_ID),
            entry(TAG_OTHER, 4, UNDEFINED_ID),
        ];
        assert_eq!(
            Rule::from_xattr(&acl(&base)).unwrap(),
            Some(rule(6, 4, UNSET, 4))
        );
        let einval = |b: Vec<u8>| matches!(Rule::from_xattr(&b), Err(Error::Sys(EINVAL)));
        // A named user without a mask.
        assert!(einval(acl(&[
            base[0].clone(),
            entry(TAG_USER, 6, 5),
            base[1].clone(),
            base[2].clone()
        ])));
        // No owning group; entries out of order; the same user twice; bad perm bits.
        assert!(einval(acl(&[base[0].clone(), base[2].clone()])));
        assert!(einval(acl(&[
            base[1].clone(),
            base[0].clone(),
            base[2].clone()
        ])));
        assert!(einval(acl(&[
            base[0].clone(),
            entry(TAG_USER, 6, 5),
            entry(TAG_USER, 6, 5),
            base[1].clone(),
            entry(TAG_MASK, 6, UNDEFINED_ID),
            base[2].clone()
        ])));
        assert!(einval(acl(&[
            entry(TAG_USER_OBJ, 8, UNDEFINED_ID),
            base[1].clone(),
            base[2].clone()
        ])));
        assert!(einval(vec![2, 0, 0, 0, 1]));
        let mut version_1 = acl(&base);
        version_1[0] = 1;
        assert!(matches!(
            Rule::from_xattr(&version_1),
            Err(Error::Sys(EOPNOTSUPP))
        ));
    }

    #[test]
    fn mode_mask_and_chmod_follow_linux() {
        let minimal = Rule::from_mode(0o754);
        assert!(minimal.is_minimal());
        assert_eq!(minimal.mode_bits(), 0o754);
        let mut r = rule(7, 5, 6, 1);
        r.named_users.push(AclEntry { id: 9, perm: 7 });
        // The group bits of the mode show the mask, and chmod changes the mask.
        assert_eq!(r.mode_bits(), 0o761);
        let c = r.with_mode(0o640);
        assert_eq!((c.owner, c.group, c.mask, c.other), (6, 5, 4, 0));
        assert_eq!(minimal.with_mode(0o640), Rule::from_mode(0o640));
    }

    #[test]
    fn inheritance_masks_the_default_acl_with_the_mode() {
        let mut d = rule(7, 5, 7, 5);
        d.named_users.push(AclEntry { id: 9, perm: 7 });
        // open(O_CREAT, 0666) in a directory with this default ACL.
        let (a, bits) = d.inherited(0o666);
        assert_eq!(bits, 0o664);
        assert_eq!((a.owner, a.group, a.mask, a.other), (6, 5, 6, 4));
        assert_eq!(a.named_users, d.named_users);
        // Without a mask the owning group is limited instead.
        let (a, bits) = rule(7, 7, UNSET, 0).inherited(0o2750);
        assert_eq!(bits, 0o2750);
        assert!(a.is_minimal());
    }

    #[test]
    fn access_check_follows_acl5() {
        let mut r = rule(6, 4, 6, 0);
        r.named_users.push(AclEntry { id: 1001, perm: 7 });
        r.named_groups.push(AclEntry { id: 60, perm: 2 });
        let attr = Attr::new(FileType::File, r.mode_bits(), 1000, 50);
        let who = |uid: u32, gid: u32, gids: Vec<u32>| Ctx {
            uid,
            gid,
            gids,
            ..Ctx::default()
        };
        assert!(r.permits(&who(1000, 1, vec![]), &attr, 6));
        // The mask limits a named user: rwx & rw-.
        assert!(r.permits(&who(1001, 1, vec![]), &attr, 6));
        assert!(!r.permits(&who(1001, 1, vec![]), &attr, 1));
        // The owning group reads; a named group writes; a member of both may do either
        // but not both at once.
        assert!(r.permits(&who(2000, 50, vec![]), &attr, 4));
        assert!(!r.permits(&who(2000, 50, vec![]), &attr, 2));
        assert!(r.permits(&who(2000, 1, vec![60]), &attr, 2));
        assert!(r.permits(&who(2000, 50, vec![60]), &attr, 2));
        assert!(!r.permits(&who(2000, 50, vec![60]), &attr, 6));
        // A matching group that does not grant denies, even where other would grant.
        let mut open_other = r.clone();
        open_other.other = 7;
        assert!(!open_other.permits(&who(2000, 50, vec![]), &attr, 2));
        assert!(open_other.permits(&who(2000, 1, vec![]), &attr, 2));
        assert!(!r.permits(&who(2000, 1, vec![]), &attr, 4));
    }
}
