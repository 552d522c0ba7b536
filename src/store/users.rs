//! Console users (`users` tree, by name).

use super::{encode, Result, Store, StoreError};
use crate::model::ConsoleUser;

impl Store {
    /// Stores a new console user; the name must be free.
    pub fn create_user(&self, user: &ConsoleUser) -> Result<()> {
        let inserted = self.users.compare_and_swap(
            user.name.as_bytes(),
            None as Option<&[u8]>,
            Some(encode(user)),
        )?;
        if inserted.is_err() {
            return Err(StoreError::AlreadyExists {
                kind: "user",
                id: user.name.clone(),
            });
        }
        self.flush()
    }

    /// The console user `name`.
    pub fn user(&self, name: &str) -> Result<Option<ConsoleUser>> {
        self.get(&self.users, "users", name.as_bytes())
    }

    /// Every console user, by name.
    pub fn users(&self) -> Result<Vec<ConsoleUser>> {
        self.list(&self.users, "users")
    }

    /// Deletes a console user; returns it.
    pub fn delete_user(&self, name: &str) -> Result<ConsoleUser> {
        self.remove_one(&self.users, "users", "user", name)
    }
}
