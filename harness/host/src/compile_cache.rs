// Compiled filters kept on disk between runs: a .wasm's machine code, keyed by its bytes and the
// engine's compiler settings, checked by a digest before wasmtime is allowed to load it.

use std::hash::Hasher;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module};

/// What an entry file starts with, then the SHA-256 of the rest (wasmtime's serialized module).
const MAGIC: &[u8; 8] = b"ebbcwsm1";
const HEADER: usize = MAGIC.len() + 32;

/// The environment variable that turns the cache off (`off`, `0`, `false`, `no`) or points it at
/// another directory.
pub const CACHE_ENV: &str = "EBB_COMPILE_CACHE";

/// A directory of compiled filters. Loading from it skips Cranelift (about 0.4 s of CPU for
/// ebb.wasm); an entry that is missing, unreadable, corrupt or from another wasmtime is never
/// used: the module is compiled as without a cache and the entry rewritten.
///
/// Not wasmtime's own cache (`Config::cache`, the `cache` feature): it loads any entry that
/// decompresses, with no digest over the machine code it is about to run, reports a bad entry
/// only through the `log` crate, and starts a background thread per engine to prune the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileCache {
    dir: PathBuf,
}

/// How a module was obtained, for tests and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Loaded from a verified entry.
    Hit,
    /// Compiled; the entry was written (or could not be: the reason, for a warning).
    Compiled { warning: Option<String> },
}

/// Whether an environment switch's value says off: `off`, `0`, `false` or `no`, in any case.
pub(crate) fn is_off(value: &std::ffi::OsStr) -> bool {
    ["off", "0", "false", "no"].iter().any(|o| value.eq_ignore_ascii_case(o))
}

impl CompileCache {
    /// A cache in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> CompileCache {
        CompileCache { dir: dir.into() }
    }

    /// The cache the `ebb` commands use by default: `$EBB_COMPILE_CACHE` when it names a
    /// directory, else `$XDG_CACHE_HOME/ebb`, else `$HOME/.cache/ebb`. None when
    /// `EBB_COMPILE_CACHE` is `off` (or `0`, `false`, `no`), or no directory can be named.
    pub fn from_env() -> Option<CompileCache> {
        CompileCache::from_vars(|name| std::env::var_os(name).filter(|v| !v.is_empty()))
    }

    fn from_vars(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<CompileCache> {
        if let Some(v) = var(CACHE_ENV) {
            return (!is_off(&v)).then(|| CompileCache::new(v));
        }
        let base =
            var("XDG_CACHE_HOME").map(PathBuf::from).or_else(|| var("HOME").map(|h| Path::new(&h).join(".cache")))?;
        Some(CompileCache::new(base.join("ebb")))
    }

    /// The directory entries live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry for `bytes` compiled by `engine`: the name is a digest of both, so another
    /// filter, another wasmtime or other compiler settings never share one.
    fn entry(&self, engine: &Engine, bytes: &[u8]) -> PathBuf {
        let mut key = Sha256Hasher(Sha256::new());
        key.0.update(MAGIC);
        key.0.update((bytes.len() as u64).to_le_bytes());
        key.0.update(bytes);
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut key);
        let digest = key.0.finalize();
        let name: String = digest.iter().take(20).map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{name}.cwasm"))
    }

    /// The compiled module of `bytes`: from a verified entry, else compiled (and stored).
    /// Errors are compilation's own; a cache that cannot be read or written only warns.
    pub(crate) fn module(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<(Module, Outcome)> {
        let path = self.entry(engine, bytes);
        let stale = match std::fs::read(&path) {
            Ok(file) => match verified(&file) {
                // SAFETY: the payload is byte for byte what `Module::serialize` wrote for these
                // module bytes and this engine's settings (the SHA-256 in the header says so), the
                // only input `Module::deserialize` is meant to trust; wasmtime itself refuses
                // another version's or configuration's output with an error.
                Some(payload) => match unsafe { Module::deserialize(engine, payload) } {
                    Ok(module) => return Ok((module, Outcome::Hit)),
                    Err(e) => Some(format!("not loadable ({e})")),
                },
                None => Some("corrupt (its digest does not match)".to_string()),
            },
            // No entry (or no cache directory yet); writing one says what is wrong, if anything.
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => None,
            Err(e) => Some(format!("unreadable ({e})")),
        };
        let module = Module::new(engine, bytes)?;
        let written = store(&path, &module);
        let warning = match (stale, written) {
            (Some(why), _) => {
                Some(format!("compile cache entry {} was {why}; compiled the filter again", path.display()))
            }
            (None, Err(e)) => Some(format!("compile cache {}: cannot write an entry ({e})", self.dir.display())),
            (None, Ok(())) => None,
        };
        Ok((module, Outcome::Compiled { warning }))
    }
}

/// The payload of an entry whose header and digest check out.
fn verified(file: &[u8]) -> Option<&[u8]> {
    let (header, payload) = (file.get(..HEADER)?, file.get(HEADER..)?);
    (header[..MAGIC.len()] == MAGIC[..] && header[MAGIC.len()..] == Sha256::digest(payload)[..]).then_some(payload)
}

/// Writes the entry through a temporary file and a rename, so that a reader (another `ebb`
/// starting at the same moment) sees a whole entry or none.
fn store(path: &Path, module: &Module) -> Result<(), String> {
    let payload = module.serialize().map_err(|e| e.to_string())?;
    let dir = path.parent().ok_or("no directory")?;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut file = Vec::with_capacity(HEADER + payload.len());
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(&Sha256::digest(&payload));
    file.extend_from_slice(&payload);
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &file).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        e.to_string()
    })
}

/// Feeds `Hash` implementations (the engine's compatibility hash) into SHA-256, so that the key
/// is the same in every process (std's hashers are seeded per process).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        0 // never read: the digest is taken from the inner state
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid module: compiles in microseconds.
    const WAT_FREE_MODULE: &[u8] = b"\0asm\x01\0\0\0";

    fn engine() -> Engine {
        Engine::default()
    }

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ebb-compile-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_second_load_comes_from_the_cache() {
        let dir = tempdir("hit");
        let cache = CompileCache::new(&dir);
        let (_, first) = cache.module(&engine(), WAT_FREE_MODULE).expect("compiles");
        assert_eq!(first, Outcome::Compiled { warning: None });
        let (_, second) = cache.module(&engine(), WAT_FREE_MODULE).expect("loads");
        assert_eq!(second, Outcome::Hit);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_corrupt_entry_is_never_loaded_but_compiled_again_with_one_warning() {
        let dir = tempdir("corrupt");
        let cache = CompileCache::new(&dir);
        let engine = engine();
        cache.module(&engine, WAT_FREE_MODULE).expect("compiles");
        let entry = cache.entry(&engine, WAT_FREE_MODULE);
        let mut file = std::fs::read(&entry).expect("entry written");
        let last = file.len() - 1;
        file[last] ^= 0x55; // one flipped byte in the machine code
        std::fs::write(&entry, &file).expect("rewrite");
        let (_, outcome) = cache.module(&engine, WAT_FREE_MODULE).expect("compiles again");
        let Outcome::Compiled { warning: Some(w) } = outcome else { panic!("{outcome:?}") };
        assert!(w.contains("corrupt") && w.contains(&entry.display().to_string()), "{w}");
        // Rewritten whole: the next load is a hit again.
        assert_eq!(cache.module(&engine, WAT_FREE_MODULE).expect("loads").1, Outcome::Hit);
        std::fs::write(&entry, b"short").expect("truncate");
        assert!(matches!(
            cache.module(&engine, WAT_FREE_MODULE).expect("compiles").1,
            Outcome::Compiled { warning: Some(_) }
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn other_bytes_or_compiler_settings_get_another_entry() {
        let cache = CompileCache::new("/nonexistent");
        let a = cache.entry(&engine(), WAT_FREE_MODULE);
        assert_eq!(a, cache.entry(&engine(), WAT_FREE_MODULE), "stable across engines of one config");
        let mut other = WAT_FREE_MODULE.to_vec();
        other.extend([0x00, 0x01, 0x00]); // an empty custom section
        assert_ne!(a, cache.entry(&engine(), &other));
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let epoch = Engine::new(&config).expect("engine");
        assert_ne!(a, cache.entry(&epoch, WAT_FREE_MODULE));
    }

    #[test]
    fn an_unwritable_cache_only_warns() {
        let file = tempdir("unwritable");
        std::fs::write(&file, b"a file, not a directory").expect("write");
        let (_, outcome) = CompileCache::new(&file).module(&engine(), WAT_FREE_MODULE).expect("compiles");
        assert!(
            matches!(outcome, Outcome::Compiled { warning: Some(ref w) } if w.contains("cannot write")),
            "{outcome:?}"
        );
        let _ = std::fs::remove_file(&file);
    }

    #[test]
    fn the_environment_picks_the_directory_or_turns_it_off() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| std::ffi::OsString::from(v))
        };
        let dir = |c: Option<CompileCache>| c.map(|c| c.dir().to_path_buf());
        assert_eq!(dir(CompileCache::from_vars(vars(&[("HOME", "/home/u")]))), Some("/home/u/.cache/ebb".into()));
        assert_eq!(
            dir(CompileCache::from_vars(vars(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "/c")]))),
            Some("/c/ebb".into())
        );
        assert_eq!(
            dir(CompileCache::from_vars(vars(&[("HOME", "/h"), (CACHE_ENV, "/elsewhere")]))),
            Some("/elsewhere".into())
        );
        assert_eq!(dir(CompileCache::from_vars(vars(&[("HOME", "/h"), (CACHE_ENV, "off")]))), None);
        assert_eq!(dir(CompileCache::from_vars(vars(&[("HOME", "/h"), (CACHE_ENV, "0")]))), None);
        assert_eq!(dir(CompileCache::from_vars(vars(&[]))), None);
    }
}
