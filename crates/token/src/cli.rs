//! The `gatehouse-token` command line: `serve`, and `user ...` to manage accounts.
//! Flags can also come from the environment (shown in `--help`); `SECRET_KEY` only
//! from the environment, so it never appears in a process listing.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use tokio::net::TcpListener;
use tracing::info;
use zeroize::Zeroizing;

use crate::app::serve;
use crate::clock::unix_now;
use crate::hash_costs;
use crate::issue::Issuer;
use crate::limiter::FailureLimiter;
use crate::metrics::Metrics;
use crate::passwords::{check_new_password, check_phc, Argon2Params, Hasher, OWASP_MIN};
use crate::signing::{generate, SigningAlg};
use crate::state::AppState;
use crate::store::{Location, NewUser, Store};
use crate::{secret, username};

#[derive(Parser)]
#[command(
    name = "gatehouse-token",
    version,
    about = "Issues the JWTs that the Gatehouse filter checks"
)]
pub struct Cli {
    /// SQLite database file (created if missing); ignored when a database URL is given.
    #[arg(long, env = "GATEHOUSE_DB", default_value = "gatehouse.db", global = true)]
    db: PathBuf,
    /// PostgreSQL instead of SQLite, for several replicas of the service:
    /// `postgres://user:password@host:5432/dbname` (`?sslmode=require` for TLS). Every
    /// replica and the CLI must be given the same database.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,
    /// Access-token lifetime in seconds: what `serve` issues, how long retired keys stay
    /// published, and how long `user disable` / `user revoke` keep tokens revoked at the
    /// edge. Give every command the same value.
    #[arg(long, env = "GATEHOUSE_ACCESS_TTL", default_value_t = 30 * 60, global = true)]
    access_ttl_seconds: u32,
    #[command(flatten)]
    argon2: Argon2Args,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Argon2Args {
    /// Argon2id memory in KiB (at least 19456, OWASP's minimum).
    #[arg(long, env = "GATEHOUSE_ARGON2_MEMORY_KIB", default_value_t = OWASP_MIN.memory_kib, global = true)]
    argon2_memory_kib: u32,
    /// Argon2id iterations (at least 2).
    #[arg(long, env = "GATEHOUSE_ARGON2_ITERATIONS", default_value_t = OWASP_MIN.iterations, global = true)]
    argon2_iterations: u32,
    /// Argon2id lanes (at least 1).
    #[arg(long, env = "GATEHOUSE_ARGON2_PARALLELISM", default_value_t = OWASP_MIN.parallelism, global = true)]
    argon2_parallelism: u32,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service.
    Serve(ServeArgs),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage asymmetric signing keys (needs SECRET_KEY, which seals them).
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make the next key: published at once, signing only after --activate-after seconds
    /// (so verifiers that cache the JWKS have it first); the previous key signs until then
    /// and stays published until its tokens expired.
    Rotate {
        #[arg(long, value_enum, default_value = "EdDSA")]
        alg: SigningAlg,
        /// Seconds between publishing the key and signing with it: the JWKS max-age
        /// (60) plus a margin for caches that refetch late.
        #[arg(long, default_value_t = DEFAULT_ACTIVATE_AFTER)]
        activate_after: u32,
        /// Sign with the new key at once (after a compromise): verifiers learn it when
        /// a token names it (the Gatehouse filter refetches an unknown kid at once).
        #[arg(long, conflicts_with = "activate_after")]
        now: bool,
    },
    /// Show every key: kid, algorithm, state and dates (with the service's --access-ttl-seconds).
    List,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "GATEHOUSE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// `iss` of every token; the filter's `issuer` must be the same.
    #[arg(long, env = "GATEHOUSE_ISSUER", default_value = "gatehouse")]
    issuer: String,
    /// `aud` of every token; one of the filter's `audiences`.
    #[arg(long, env = "GATEHOUSE_AUDIENCE", default_value = gatehouse_claims::DEFAULT_AUDIENCE)]
    audience: String,
    /// Refresh-token lifetime in seconds.
    #[arg(long, env = "GATEHOUSE_REFRESH_TTL", default_value_t = 7 * 24 * 3600)]
    refresh_ttl_seconds: u32,
    /// Argon2 runs at once (each takes the configured memory); default: the CPU count.
    #[arg(long, env = "GATEHOUSE_MAX_CONCURRENT_HASHES")]
    max_concurrent_hashes: Option<usize>,
    /// How long a login waits for a hashing slot before 503.
    #[arg(long, env = "GATEHOUSE_HASH_QUEUE_TIMEOUT_MS", default_value_t = 2000)]
    hash_queue_timeout_ms: u64,
    /// Failed logins allowed per username per window.
    #[arg(long, env = "GATEHOUSE_MAX_FAILURES_PER_USER", default_value_t = 5)]
    max_failures_per_user: u32,
    /// Failed logins allowed per client address per window.
    #[arg(long, env = "GATEHOUSE_MAX_FAILURES_PER_ADDRESS", default_value_t = 20)]
    max_failures_per_address: u32,
    /// The window in which failures refill, in seconds.
    #[arg(long, env = "GATEHOUSE_FAILURE_WINDOW", default_value_t = 300)]
    failure_window_seconds: u32,
    /// Take the client address from the last X-Forwarded-For entry (only behind a proxy
    /// that appends it, such as Envoy).
    #[arg(long, env = "GATEHOUSE_TRUST_FORWARDED_FOR")]
    trust_forwarded_for: bool,
    /// Signing algorithm: HS256 (SECRET_KEY, shared with the filter) or EdDSA / ES256
    /// (a private key that only this service holds, published at /.well-known/jwks.json).
    #[arg(long, env = "GATEHOUSE_SIGNING_ALG", value_enum, default_value = "HS256")]
    signing_alg: SigningAlg,
    /// The URL clients use to reach this service, for the discovery document.
    #[arg(long, env = "GATEHOUSE_PUBLIC_URL")]
    public_url: Option<String>,
    /// The role that may use the admin API (/admin/...), in the token and in the user's
    /// current roles.
    #[arg(long, env = "GATEHOUSE_ADMIN_ROLE", default_value = "admin")]
    admin_role: String,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user; the password is read from a prompt, or from stdin when it is not a terminal.
    Add {
        name: String,
        /// A role (repeat for several).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Create the account disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// Set a new password (prompt or stdin); revokes the user's refresh tokens.
    Passwd { name: String },
    /// Disable a user and revoke all their tokens (access tokens at the edge).
    Disable { name: String },
    /// Enable a user; tokens revoked before stay revoked.
    Enable { name: String },
    /// Revoke every token of a user issued until now, without disabling them.
    Revoke { name: String },
    /// Replace a user's roles.
    Roles {
        name: String,
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// List users (never their hashes).
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Import JSON lines of {username, hashed_password, roles, disabled} with existing
    /// Argon2 PHC hashes (such as pwdlib's or argon2-cffi's). All or nothing.
    Import { file: PathBuf },
}

/// Seconds `keys rotate` publishes a key before it signs: the JWKS max-age, 60 s, and
/// as much again.
pub const DEFAULT_ACTIVATE_AFTER: u32 = 120;

/// How often `serve` reloads the signing keys from the store.
pub const KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let params = Argon2Params {
        memory_kib: cli.argon2.argon2_memory_kib,
        iterations: cli.argon2.argon2_iterations,
        parallelism: cli.argon2.argon2_parallelism,
    };
    let access_ttl = i64::from(cli.access_ttl_seconds);
    let db = Location::pick(&cli.db, cli.database_url.as_deref())?;
    match cli.command {
        Command::Serve(args) => serve_command(&db, params, access_ttl, args).await,
        Command::User(cmd) => user_command(&db, params, access_ttl, cmd).await,
        Command::Keys(cmd) => keys_command(&db, access_ttl, cmd).await,
    }
}

async fn open(db: &Location) -> anyhow::Result<Store> {
    Store::open(db).await.with_context(|| format!("opening the {db}"))
}

async fn serve_command(
    db: &Location,
    params: Argon2Params,
    access_ttl: i64,
    args: ServeArgs,
) -> anyhow::Result<()> {
    let secret = secret::parse(std::env::var("SECRET_KEY").ok().as_deref())?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let hasher = Hasher::new(
        params,
        args.max_concurrent_hashes.unwrap_or(cpus),
        Duration::from_millis(args.hash_queue_timeout_ms),
    )?;
    let store = open(db).await?;
    let purged = store.purge_expired(unix_now()).await?;
    let window = Duration::from_secs(u64::from(args.failure_window_seconds.max(1)));
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let public_url = args.public_url.unwrap_or_else(|| {
        format!(
            "http://{}",
            listener
                .local_addr()
                .map_or(args.listen.clone(), |a| a.to_string())
        )
    });
    let issuer = Issuer::new(&secret, args.issuer, args.audience, access_ttl)
        .with_alg(args.signing_alg)
        .with_public_url(public_url);
    issuer
        .load(&store, unix_now())
        .await
        .context("loading the signing keys")?;
    info!(
        alg = args.signing_alg.name(),
        kid = issuer.signer().kid(),
        "signing access tokens"
    );
    let state = Arc::new(AppState {
        store: store.clone(),
        hasher,
        issuer,
        refresh_ttl_seconds: i64::from(args.refresh_ttl_seconds),
        failures_per_user: FailureLimiter::new(args.max_failures_per_user, window),
        failures_per_address: FailureLimiter::new(args.max_failures_per_address, window),
        trust_forwarded_for: args.trust_forwarded_for,
        metrics: Metrics::default(),
        admin_role: args.admin_role,
    });
    // Before the first login: a failed one waits as long as the slowest hash in the store.
    hash_costs::learn_from_store(&state.hasher, &state.store)
        .await
        .context("reading the password hash parameters in use")?;
    // A key rotated from the CLI or by another replica is signed with and published
    // within a second, and the parameters of a user imported meanwhile are timed (two
    // small reads per second).
    let reloader = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(KEY_RELOAD_INTERVAL);
            loop {
                every.tick().await;
                if let Err(e) = state.issuer.load(&state.store, unix_now()).await {
                    tracing::warn!(error = %e, "could not reload the signing keys");
                }
                if let Err(e) = hash_costs::learn_from_store(&state.hasher, &state.store).await {
                    tracing::warn!(error = %e, "could not read the password hash parameters in use");
                }
            }
        })
    };
    info!(address = %listener.local_addr()?, purged_refresh_tokens = purged, "gatehouse-token listening");
    serve(listener, state, shutdown_signal()).await?;
    reloader.abort();
    store.close().await;
    info!("gatehouse-token stopped");
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    info!("shutting down");
}

fn canonical_name(raw: &str) -> anyhow::Result<String> {
    username::canonical(raw).with_context(|| {
        format!(
            "invalid username {raw:?}: after NFKC and lower case it must be ASCII letters or digits, then up to {} of letters, digits and . _ @ + -",
            username::MAX_LEN - 1
        )
    })
}

fn check_roles(roles: &[String]) -> anyhow::Result<()> {
    for role in roles {
        if role.is_empty()
            || role.len() > 64
            || !role
                .bytes()
                .all(|b| (0x21..0x7f).contains(&b) && !b",;\"\\".contains(&b))
        {
            bail!("invalid role {role:?}: 1 to 64 visible ASCII characters, without , ; \" or \\");
        }
    }
    Ok(())
}

/// A new password from the terminal (asked twice) or the first line of stdin.
fn read_password() -> anyhow::Result<Zeroizing<String>> {
    let password = if std::io::stdin().is_terminal() {
        let first = Zeroizing::new(rpassword::prompt_password("Password: ")?);
        let again = Zeroizing::new(rpassword::prompt_password("Again: ")?);
        if first != again {
            bail!("the passwords differ");
        }
        first
    } else {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin().lock().read_line(&mut line)?;
        Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_string())
    };
    check_new_password(&password).map_err(anyhow::Error::from)?;
    Ok(password)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportLine {
    username: String,
    hashed_password: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    disabled: bool,
}

async fn user_command(
    db: &Location,
    params: Argon2Params,
    access_ttl: i64,
    cmd: UserCommand,
) -> anyhow::Result<()> {
    let now = unix_now();
    let store = open(db).await?;
    let hasher = || Hasher::new(params, 1, Duration::from_secs(60));
    match cmd {
        UserCommand::Add {
            name,
            roles,
            disabled,
        } => {
            let name = canonical_name(&name)?;
            check_roles(&roles)?;
            let password = read_password()?;
            let hash = hasher()?.hash_blocking(&password)?;
            let user = store
                .create_user(
                    NewUser {
                        username: &name,
                        password_hash: &hash,
                        roles: &roles,
                        disabled,
                    },
                    now,
                )
                .await?;
            println!("added {} (roles: {})", user.username, user.roles.join(", "));
        }
        UserCommand::Passwd { name } => {
            let name = canonical_name(&name)?;
            if store.user(&name).await?.is_none() {
                bail!("no user {name}");
            }
            let password = read_password()?;
            let hash = hasher()?.hash_blocking(&password)?;
            store.set_password(&name, &hash, now, access_ttl).await?;
            println!("password of {name} changed; all their tokens are revoked");
        }
        UserCommand::Disable { name } => {
            let name = canonical_name(&name)?;
            store.set_disabled(&name, true, now, access_ttl).await?;
            println!("disabled {name}; all their tokens are revoked");
        }
        UserCommand::Enable { name } => {
            let name = canonical_name(&name)?;
            store.set_disabled(&name, false, now, access_ttl).await?;
            println!("enabled {name}; tokens revoked before stay revoked");
        }
        UserCommand::Revoke { name } => {
            let name = canonical_name(&name)?;
            store.revoke_user(&name, now, access_ttl).await?;
            println!("revoked every token of {name} issued until now");
        }
        UserCommand::Roles { name, roles } => {
            check_roles(&roles)?;
            store
                .set_roles(&canonical_name(&name)?, &roles, now, access_ttl)
                .await?;
            println!(
                "roles of {name}: {} (a role taken away revokes their tokens)",
                roles.join(", ")
            );
        }
        UserCommand::List { json } => {
            for u in store.list_users().await? {
                if json {
                    println!("{}", serde_json::to_string(&u)?);
                } else {
                    let state = if u.disabled { "disabled" } else { "active" };
                    println!("{}\t{}\t{}", u.username, state, u.roles.join(","));
                }
            }
        }
        UserCommand::Import { file } => {
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let mut lines = Vec::new();
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let at = || format!("{}:{}", file.display(), i + 1);
                let parsed: ImportLine =
                    serde_json::from_str(line).with_context(|| format!("{}: not a user record", at()))?;
                let name = canonical_name(&parsed.username).with_context(at)?;
                check_phc(&parsed.hashed_password).with_context(|| format!("{}: hashed_password", at()))?;
                check_roles(&parsed.roles).with_context(at)?;
                if lines.iter().any(|(n, _): &(String, ImportLine)| *n == name) {
                    bail!("{}: {name} appears twice", at());
                }
                lines.push((name, parsed));
            }
            let users: Vec<NewUser<'_>> = lines
                .iter()
                .map(|(name, l)| NewUser {
                    username: name,
                    password_hash: &l.hashed_password,
                    roles: &l.roles,
                    disabled: l.disabled,
                })
                .collect();
            let n = store.import_users(&users, now).await?;
            println!("imported {n} user(s)");
        }
    }
    store.close().await;
    Ok(())
}

async fn keys_command(db: &Location, access_ttl: i64, cmd: KeysCommand) -> anyhow::Result<()> {
    let store = open(db).await?;
    let now = unix_now();
    match cmd {
        KeysCommand::Rotate {
            alg,
            activate_after,
            now: at_once,
        } => {
            if alg == SigningAlg::Hs256 {
                bail!("HS256 has no key to rotate: its key is SECRET_KEY; choose EdDSA or ES256");
            }
            let secret = secret::parse(std::env::var("SECRET_KEY").ok().as_deref())?;
            let key = generate(alg, &secret)?;
            if at_once {
                store.rotate_signing_key(&key, now).await?;
                println!(
                    "new current key {} ({}); running services sign with it within a second",
                    key.kid,
                    alg.name()
                );
            } else {
                let at = now.saturating_add(i64::from(activate_after));
                store.rotate_signing_key_at(&key, now, at).await?;
                println!(
                    "next key {} ({}) published now; running services sign with it from {at} (in {activate_after} s)",
                    key.kid,
                    alg.name()
                );
            }
        }
        KeysCommand::List => {
            let window = access_ttl.saturating_add(120);
            println!("kid\talg\tstate\tcreated\tretired");
            for k in store.signing_keys().await? {
                let state = match (k.activates_at, k.retired_at) {
                    (Some(a), _) if a > now => format!("published, signs from {a}"),
                    (_, None) => "current".to_string(),
                    (_, Some(r)) if r > now => format!("current until {r}"),
                    (_, Some(r)) if r.saturating_add(window) > now => {
                        format!("retired, published until {}", r + window)
                    }
                    (_, Some(_)) => "expired".to_string(),
                };
                let retired = k.retired_at.map_or("-".to_string(), |r| r.to_string());
                println!(
                    "{}\t{}\t{state}\t{}\t{retired}",
                    k.kid,
                    k.alg.name(),
                    k.created_at
                );
            }
        }
    }
    store.close().await;
    Ok(())
}
