//! Writes of a read-write transaction held back and sent as one statement each of
//! upserts and deletes, in the message that commits (or before the next read).
//!
//! A create writes three keys; sent one by one, they are three round trips between
//! its read and its COMMIT. Held here, they go with the COMMIT itself: the values are
//! written into the SQL text as hex literals (`decode('..', 'hex')` on PostgreSQL, which
//! does not depend on `standard_conforming_strings`; `X'..'` on MySQL), so the text
//! needs no quoting and can join other statements in one simple query. A later write of
//! a key replaces an earlier one (one multi-row upsert may not touch a row twice on
//! PostgreSQL), and the order between keys does not matter: each key ends with its last
//! write. Reads within the transaction see the writes because the batch is sent before
//! any read; large values and appends, which must not be copied into text or reordered,
//! send the batch first and then go as statements of their own.

use super::Dialect;
use crate::feed::to_hex;
use std::collections::HashMap;

/// Values longer than this are written by a statement of their own, bound, not copied
/// into the text of the batch (MySQL's max_allowed_packet is 16 MiB by default).
pub(super) const MAX_BATCHED_VALUE: usize = 64 << 10;

/// The held-back writes: the last value of each key (`None`: deleted), in first-write
/// order.
#[derive(Default)]
pub(super) struct Batch {
    writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    index: HashMap<Vec<u8>, usize>,
}

impl Batch {
    /// Holds a write of `key` (`None`: a delete), replacing an earlier one.
    pub(super) fn put(&mut self, key: &[u8], value: Option<&[u8]>) {
        let value = value.map(<[u8]>::to_vec);
        match self.index.get(key) {
            Some(&i) => self.writes[i].1 = value,
            None => {
                self.index.insert(key.to_vec(), self.writes.len());
                self.writes.push((key.to_vec(), value));
            }
        }
    }

    /// The statements that make the held-back writes (none when there are none), and
    /// empties the batch.
    pub(super) fn take_sql(&mut self, dialect: Dialect, table: &str) -> Option<String> {
        if self.writes.is_empty() {
            return None;
        }
        let lit = |b: &[u8]| match dialect {
            Dialect::Postgres => format!("decode('{}', 'hex')", to_hex(b)),
            Dialect::MySql => format!("X'{}'", to_hex(b)),
        };
        let mut rows = Vec::new();
        let mut gone = Vec::new();
        for (k, v) in self.writes.drain(..) {
            match v {
                Some(v) => rows.push(format!("({}, {})", lit(&k), lit(&v))),
                None => gone.push(lit(&k)),
            }
        }
        self.index.clear();
        let mut sql = Vec::new();
        if !rows.is_empty() {
            let rows = rows.join(", ");
            sql.push(match dialect {
                Dialect::Postgres => format!(
                    "INSERT INTO {table} AS t (k, v) VALUES {rows} \
                     ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
                ),
                Dialect::MySql => format!(
                    "INSERT INTO {table} (k, v) VALUES {rows} ON DUPLICATE KEY UPDATE v = VALUES(v)"
                ),
            });
        }
        if !gone.is_empty() {
            sql.push(format!(
                "DELETE FROM {table} WHERE k IN ({})",
                gone.join(", ")
            ));
        }
        Some(sql.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_write_of_each_key_goes_in_one_upsert_and_one_delete() {
        let mut b = Batch::default();
        assert_eq!(b.take_sql(Dialect::MySql, "t"), None);
        b.put(b"a", Some(b"1"));
        b.put(b"b", Some(b"2"));
        b.put(b"a", None);
        b.put(b"c", None);
        b.put(b"c", Some(b""));
        assert_eq!(
            b.take_sql(Dialect::MySql, "t").unwrap(),
            "INSERT INTO t (k, v) VALUES (X'62', X'32'), (X'63', X'') \
             ON DUPLICATE KEY UPDATE v = VALUES(v); DELETE FROM t WHERE k IN (X'61')"
        );
        assert!(b.writes.is_empty() && b.index.is_empty());
        b.put(b"'\\", Some(b"x"));
        assert_eq!(
            b.take_sql(Dialect::Postgres, "\"t\"").unwrap(),
            "INSERT INTO \"t\" AS t (k, v) VALUES (decode('275c', 'hex'), decode('78', 'hex')) \
             ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
        );
    }
}
