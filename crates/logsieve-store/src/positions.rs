//! Where `classify --follow` left each file: the file's identity (device,
//! inode) and the byte after the last line it wrote out. Kept by the file's
//! absolute path; written through the writer like everything else.

use rusqlite::OptionalExtension;

use crate::{now_unix, Store, StoreError};

/// A followed file's saved place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowPosition {
    pub dev: u64,
    pub ino: u64,
    pub offset: u64,
}

impl Store {
    /// The place `path` was left at, if it was followed on this store.
    pub fn follow_position(&self, path: &str) -> Result<Option<FollowPosition>, StoreError> {
        self.read(|c| {
            c.query_row(
                "SELECT dev, ino, offset FROM follow_positions WHERE path = ?1",
                [path],
                |r| {
                    Ok(FollowPosition {
                        dev: r.get::<_, i64>(0)? as u64,
                        ino: r.get::<_, i64>(1)? as u64,
                        offset: r.get::<_, i64>(2)? as u64,
                    })
                },
            )
            .optional()
        })
    }

    /// Queue `path`'s new place (committed with the writer's next batch;
    /// [`Store::flush`] waits for it).
    pub fn save_follow_position(&self, path: &str, dev: u64, ino: u64, offset: u64) {
        let path = path.to_string();
        let now = now_unix();
        self.execute(Box::new(move |tx| {
            tx.execute(
                "INSERT INTO follow_positions (path, dev, ino, offset, updated) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (path) DO UPDATE SET dev = ?2, ino = ?3, offset = ?4, updated = ?5",
                rusqlite::params![path, dev as i64, ino as i64, offset as i64, now],
            )
            .map(|_| ())
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_followed_files_place_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let s = Store::open(&db).unwrap();
        assert_eq!(s.follow_position("/var/log/app.log").unwrap(), None);
        s.save_follow_position("/var/log/app.log", 1, 2, 300);
        s.save_follow_position("/var/log/app.log", 1, 2, 450);
        s.flush().unwrap();
        drop(s);
        let s = Store::open(&db).unwrap();
        assert_eq!(
            s.follow_position("/var/log/app.log").unwrap(),
            Some(FollowPosition {
                dev: 1,
                ino: 2,
                offset: 450
            })
        );
        assert_eq!(s.follow_position("/var/log/other.log").unwrap(), None);
    }
}
