//! Provisioning records: categories (name unique per tenant), rollouts, jobs, and the
//! redemption of a code, which changes a device, the code and its rollout in one transaction.

use super::kv::Transactional;
use super::kv::TransactionalTree;

use super::devices::DeviceTx;
use super::{abort, encode, finish, next_revision, tx_get, Result, Store, StoreError, TxResult};
use crate::model::{validate_id, Category, Code, Device, EntryState, Job, Rollout, UnixTime};

fn name_key(tenant: &str, name: &str) -> Vec<u8> {
    let mut key = tenant.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(name.as_bytes());
    key
}

fn job_prefix(tenant: &str, category: &str) -> Vec<u8> {
    let mut key = name_key(tenant, category);
    key.push(0);
    key
}

fn job_key(job: &Job) -> Vec<u8> {
    let mut key = job_prefix(&job.tenant, &job.category);
    key.extend_from_slice(&job.seq.to_be_bytes());
    key
}

/// The `meta` key of the last job's number.
const JOB_SEQ: &[u8] = b"job_seq";

impl Store {
    /// The highest number of a stored job (0 without jobs): the last 8 bytes of their keys.
    fn highest_job_seq(&self) -> Result<u64> {
        let mut highest = 0;
        for key in self.jobs.iter().keys() {
            let key = key?;
            if let Some(seq) = key
                .len()
                .checked_sub(8)
                .and_then(|at| key[at..].try_into().ok())
            {
                highest = highest.max(u64::from_be_bytes(seq));
            }
        }
        Ok(highest)
    }
}

/// Sets the state of `code`'s entry in its rollout, inside a transaction.
fn set_entry(
    rollouts: &TransactionalTree,
    code: &Code,
    edit: impl Fn(&mut crate::model::RolloutEntry),
) -> TxResult<()> {
    let Some(id) = &code.rollout else {
        return Ok(());
    };
    // A rollout deleted since is no error: its codes went with it, but a racing redemption
    // may still hold one.
    let Some(mut rollout) = tx_get::<Rollout>(rollouts, "rollouts", id.as_bytes())? else {
        return Ok(());
    };
    if let Some(entry) = rollout.entries.iter_mut().find(|e| e.code == code.code) {
        edit(entry);
    }
    rollout.revision += 1;
    rollouts.insert(id.as_bytes(), encode(&rollout))?;
    Ok(())
}

impl Store {
    /// Stores a new category; its name must be free in its tenant.
    pub fn create_category(&self, category: &Category) -> Result<Category> {
        validate_id(&category.id)?;
        let mut new = category.clone();
        new.revision = 1;
        let stored = finish((&self.categories, &self.idx_category_name).transaction(
            |(categories, names)| {
                if categories.get(new.id.as_bytes())?.is_some() {
                    return Err(abort(StoreError::AlreadyExists {
                        kind: "category",
                        id: new.id.clone(),
                    }));
                }
                claim_name(names, &new)?;
                categories.insert(new.id.as_bytes(), encode(&new))?;
                Ok(new.clone())
            },
        ))?;
        self.flush()?;
        Ok(stored)
    }

    /// Replaces a category; `category.revision` must be the stored one. Its tenant never
    /// changes.
    pub fn update_category(&self, category: &Category) -> Result<Category> {
        let stored = finish((&self.categories, &self.idx_category_name).transaction(
            |(categories, names)| {
                let old: Category = tx_get(categories, "categories", category.id.as_bytes())?
                    .ok_or_else(|| {
                        abort(StoreError::NotFound {
                            kind: "category",
                            id: category.id.clone(),
                        })
                    })?;
                let mut new = category.clone();
                new.tenant = old.tenant.clone();
                new.revision = next_revision("category", &new.id, category.revision, old.revision)
                    .map_err(abort)?;
                if old.name != new.name {
                    names.remove(name_key(&old.tenant, &old.name))?;
                    claim_name(names, &new)?;
                }
                categories.insert(new.id.as_bytes(), encode(&new))?;
                Ok(new)
            },
        ))?;
        self.flush()?;
        Ok(stored)
    }

    /// Deletes a category and its jobs; returns it.
    pub fn delete_category(&self, id: &str) -> Result<Category> {
        let old = finish((&self.categories, &self.idx_category_name).transaction(
            |(categories, names)| {
                let old: Category =
                    tx_get(categories, "categories", id.as_bytes())?.ok_or_else(|| {
                        abort(StoreError::NotFound {
                            kind: "category",
                            id: id.to_owned(),
                        })
                    })?;
                categories.remove(id.as_bytes())?;
                names.remove(name_key(&old.tenant, &old.name))?;
                Ok(old)
            },
        ))?;
        // Jobs of a category that no longer exists never apply (a device's category is read
        // first); removing them after the category cannot leave one that matters.
        for item in self.jobs.scan_prefix(job_prefix(&old.tenant, &old.id)) {
            let (key, _) = item?;
            self.jobs.remove(key)?;
        }
        self.flush()?;
        Ok(old)
    }

    /// The category `id`.
    pub fn category(&self, id: &str) -> Result<Option<Category>> {
        self.get(&self.categories, "categories", id.as_bytes())
    }

    /// The category of `tenant` named `name`.
    pub fn category_by_name(&self, tenant: &str, name: &str) -> Result<Option<Category>> {
        match self.idx_category_name.get(name_key(tenant, name))? {
            Some(id) => self.category(&String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    /// Every category.
    pub fn categories(&self) -> Result<Vec<Category>> {
        self.list(&self.categories, "categories")
    }

    /// Stores a rollout and its codes together; a code that is already live fails the whole
    /// write with [`StoreError::AlreadyExists`] (the caller draws new codes).
    pub fn create_rollout(&self, rollout: &Rollout, codes: &[Code]) -> Result<Rollout> {
        validate_id(&rollout.id)?;
        let mut new = rollout.clone();
        new.revision = 1;
        let stored = finish(
            (&self.rollouts, &self.codes).transaction(|(rollouts, tx_codes)| {
                if rollouts.get(new.id.as_bytes())?.is_some() {
                    return Err(abort(StoreError::AlreadyExists {
                        kind: "rollout",
                        id: new.id.clone(),
                    }));
                }
                for code in codes {
                    if tx_codes
                        .replace(code.code.as_bytes(), encode(code))?
                        .is_some()
                    {
                        return Err(abort(StoreError::AlreadyExists {
                            kind: "code",
                            id: code.tail(),
                        }));
                    }
                }
                rollouts.insert(new.id.as_bytes(), encode(&new))?;
                Ok(new.clone())
            }),
        )?;
        self.flush()?;
        Ok(stored)
    }

    /// The rollout `id`.
    pub fn rollout(&self, id: &str) -> Result<Option<Rollout>> {
        self.get(&self.rollouts, "rollouts", id.as_bytes())
    }

    /// Every rollout.
    pub fn rollouts(&self) -> Result<Vec<Rollout>> {
        self.list(&self.rollouts, "rollouts")
    }

    /// Deletes a rollout and its codes still live; returns it.
    pub fn delete_rollout(&self, id: &str) -> Result<Rollout> {
        let old = finish(
            (&self.rollouts, &self.codes).transaction(|(rollouts, codes)| {
                let old: Rollout =
                    tx_get(rollouts, "rollouts", id.as_bytes())?.ok_or_else(|| {
                        abort(StoreError::NotFound {
                            kind: "rollout",
                            id: id.to_owned(),
                        })
                    })?;
                for entry in &old.entries {
                    codes.remove(entry.code.as_bytes())?;
                }
                rollouts.remove(id.as_bytes())?;
                Ok(old)
            }),
        )?;
        self.flush()?;
        Ok(old)
    }

    /// Uses the live code `code` for `device` (the device as it should be written, with the
    /// revision it was read at): in one transaction the code is deleted, its rollout entry
    /// becomes registered and the device is written. A code that is gone or expired at `now`
    /// is [`StoreError::NotFound`].
    pub fn redeem_code(
        &self,
        code: &str,
        device: &Device,
        now: UnixTime,
    ) -> Result<(Device, Code)> {
        let default_tenant = self.default_tenant()?;
        let trees = (
            &self.devices,
            &self.idx_mac,
            &self.idx_ip,
            &self.idx_cfg_devices,
            &self.idx_dev,
            &self.counts,
            &self.codes,
            &self.rollouts,
        );
        let done = finish(trees.transaction(
            |(devices, idx_mac, idx_ip, idx_cfg, idx_dev, counts, codes, rollouts)| {
                let gone = || {
                    abort(StoreError::NotFound {
                        kind: "code",
                        id: crate::model::code_tail(code),
                    })
                };
                let used: Code = tx_get(codes, "codes", code.as_bytes())?.ok_or_else(gone)?;
                if now >= used.expires {
                    return Err(gone());
                }
                codes.remove(code.as_bytes())?;
                set_entry(rollouts, &used, |entry| {
                    entry.state = EntryState::Registered;
                    entry.device = Some(device.id.clone());
                    entry.device_mac = device.mac;
                    entry.registered_at = Some(now);
                })?;
                let trees = DeviceTx {
                    devices,
                    idx_mac,
                    idx_ip,
                    idx_cfg,
                    idx_dev,
                    counts,
                };
                let written = trees.update(device, default_tenant.as_deref())?;
                Ok((written, used))
            },
        ))?;
        self.flush()?;
        Ok(done)
    }

    /// Deletes a live code before its time; its rollout entry becomes revoked.
    pub fn revoke_code(&self, code: &str) -> Result<Code> {
        let old = finish(
            (&self.codes, &self.rollouts).transaction(|(codes, rollouts)| {
                let old: Code = tx_get(codes, "codes", code.as_bytes())?.ok_or_else(|| {
                    abort(StoreError::NotFound {
                        kind: "code",
                        id: crate::model::code_tail(code),
                    })
                })?;
                codes.remove(code.as_bytes())?;
                set_entry(rollouts, &old, |entry| entry.state = EntryState::Revoked)?;
                Ok(old)
            }),
        )?;
        self.flush()?;
        Ok(old)
    }

    /// Deletes the codes expired at `now`; returns them. Their rollout entries stay pending
    /// and read as expired (see [`Rollout::state_at`]).
    pub fn sweep_codes(&self, now: UnixTime) -> Result<Vec<Code>> {
        let mut swept = Vec::new();
        for code in self.list::<Code>(&self.codes, "codes")? {
            if now < code.expires {
                continue;
            }
            // Only if still the same record: a code drawn again under the same digits since
            // the scan is live.
            let removed = self.codes.compare_and_swap(
                code.code.as_bytes(),
                Some(encode(&code)),
                None as Option<&[u8]>,
            )?;
            if removed.is_ok() {
                swept.push(code);
            }
        }
        if !swept.is_empty() {
            self.flush()?;
        }
        Ok(swept)
    }

    /// Stores a new job; the store numbers it after every job before it.
    pub fn create_job(&self, job: &Job) -> Result<Job> {
        validate_id(&job.id)?;
        let stored = finish((&self.meta, &self.jobs).transaction(|(meta, jobs)| {
            let last = match meta.get(JOB_SEQ)? {
                Some(bytes) => super::decode_count("meta", JOB_SEQ, &bytes).map_err(abort)?,
                // A store imported from sled, whose own counter numbered its jobs: go on
                // after the highest (jobs are few; this runs once).
                None => self.highest_job_seq().map_err(abort)?,
            };
            let mut new = job.clone();
            new.seq = last + 1;
            meta.insert(JOB_SEQ, new.seq.to_be_bytes())?;
            jobs.insert(job_key(&new), encode(&new))?;
            Ok(new)
        }))?;
        self.flush()?;
        Ok(stored)
    }

    /// The jobs of `tenant`'s category `category`, oldest first.
    pub fn jobs_of(&self, tenant: &str, category: &str) -> Result<Vec<Job>> {
        self.jobs
            .scan_prefix(job_prefix(tenant, category))
            .map(|item| {
                let (key, value) = item?;
                super::decode("jobs", &key, &value)
            })
            .collect()
    }

    /// Every job, by tenant, category, then age.
    pub fn jobs(&self) -> Result<Vec<Job>> {
        self.list(&self.jobs, "jobs")
    }

    /// Deletes the job `id`; returns it.
    pub fn delete_job(&self, id: &str) -> Result<Job> {
        let found = self
            .jobs()
            .map(|jobs| jobs.into_iter().find(|j| j.id == id))?;
        let job = found.ok_or_else(|| StoreError::NotFound {
            kind: "job",
            id: id.to_owned(),
        })?;
        self.jobs.remove(job_key(&job))?;
        self.flush()?;
        Ok(job)
    }
}

fn claim_name(names: &TransactionalTree, category: &Category) -> TxResult<()> {
    let key = name_key(&category.tenant, &category.name);
    if let Some(owner) = names.get(&key)? {
        if owner.as_ref() != category.id.as_bytes() {
            return Err(abort(StoreError::Taken {
                what: format!("category name {:?}", category.name),
                kind: "category",
                owner: String::from_utf8_lossy(&owner).into_owned(),
            }));
        }
    }
    names.insert(key, category.id.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::JobKind;

    fn job(id: &str) -> Job {
        Job {
            id: id.to_owned(),
            tenant: "t".to_owned(),
            category: "c".to_owned(),
            created: 0,
            seq: 0,
            kind: JobKind::Config {
                kind: "params".to_owned(),
                params: Default::default(),
            },
        }
    }

    #[test]
    fn jobs_are_numbered_after_the_highest_even_without_the_counter() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.create_job(&job("j1")).unwrap().seq, 1);
        assert_eq!(store.create_job(&job("j2")).unwrap().seq, 2);
        // As in a store imported from sled, whose jobs sled's own counter numbered.
        store.meta.remove(JOB_SEQ).unwrap();
        assert_eq!(store.create_job(&job("j3")).unwrap().seq, 3);
        assert_eq!(store.create_job(&job("j4")).unwrap().seq, 4);
        let seqs: Vec<u64> = store
            .jobs_of("t", "c")
            .unwrap()
            .iter()
            .map(|j| j.seq)
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4]);
    }
}
