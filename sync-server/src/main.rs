//! `aq-sync`: the central registry server and its offline admin commands.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use aq_sync_proto::Role;
use aq_sync_server::{MqttMode, ServerOptions, TlsMode, server, tokens::Tokens};
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "aq-sync",
    version,
    about = "Aquilia Edge sync-server: the central modelpack registry"
)]
struct Cli {
    /// Server data directory [default: $XDG_DATA_HOME/aquilia-sync or ~/.local/share/aquilia-sync]
    #[arg(long, global = true, env = "AQ_SYNC_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server
    Serve(Box<ServeArgs>),
    /// Manage API tokens while the server is stopped (use /v1/tokens while it runs)
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:8443", value_name = "HOST:PORT")]
    addr: SocketAddr,
    /// TLS certificate chain (PEM, leaf first); without it a private CA and certificate are
    /// made in DATA/tls/ on first start
    #[arg(long, requires = "tls_key", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM)
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Names (DNS or IP) the generated certificate is valid for; repeatable
    #[arg(long = "tls-name", value_name = "NAME", default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()])]
    tls_names: Vec<String>,
    /// Serve plain HTTP (only behind a TLS-terminating proxy)
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    no_tls: bool,
    /// Accept unsigned packs (the trust policy still checks signed ones)
    #[arg(long)]
    allow_unsigned: bool,
    /// Largest request body in bytes
    #[arg(long, default_value_t = 64 << 20, value_name = "BYTES")]
    max_body: usize,
    /// HTTPS connections served at once; one more gets 503 with Retry-After
    #[arg(long, default_value_t = 1024, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Requests handled at once; one more is answered 503 with Retry-After at once
    /// [default: 8 per core]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_requests: Option<u32>,
    /// Threads that do store and fleet work; while their queue stands (even the shortest
    /// wait over 5 ms for 100 ms), requests past one waiting per thread get 503 with
    /// Retry-After [default: one per core]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    work_threads: Option<u32>,
    /// Run the HTTP threads this many nice steps below the work pool (10: under overload the
    /// CPU finishes admitted work first; on a machine shared with other busy processes they
    /// then starve the HTTP threads too)
    #[arg(long, value_name = "STEPS", default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..=19))]
    http_nice: i32,
    /// A client slower than this to send a request's headers is disconnected
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    header_read_timeout: Duration,
    /// Address of the built-in MQTT broker
    #[arg(
        long,
        default_value = "127.0.0.1:1883",
        value_name = "HOST:PORT",
        conflicts_with = "mqtt_url"
    )]
    mqtt_listen: SocketAddr,
    /// Use this external MQTT broker (e.g. mqtt://mosquitto:1883) instead of the built-in one
    #[arg(long, value_name = "URL")]
    mqtt_url: Option<String>,
    /// The MQTT URL devices are told at enrollment [default: the broker's address]
    #[arg(long, value_name = "URL")]
    mqtt_advertise: Option<String>,
    /// Topic prefix of the fleet's MQTT topics
    #[arg(long, default_value = "aq", value_name = "PREFIX")]
    topic_prefix: String,
    /// Log level: error, warn, info, debug or trace
    #[arg(long, env = "AQ_LOG", default_value = "info")]
    log_level: String,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Make a token and print its secret (shown once)
    Create {
        #[arg(long)]
        name: String,
        /// admin, publisher, viewer or device
        #[arg(long)]
        role: Role,
    },
    /// List tokens
    List,
    /// Revoke a token by id
    Revoke { id: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(1)
        }
    }
}

fn data_dir(cli: &Cli) -> anyhow::Result<PathBuf> {
    if let Some(d) = &cli.data_dir {
        return Ok(d.clone());
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".local/share"))
        })
        .context("cannot choose a data directory; pass --data-dir or set AQ_SYNC_DATA_DIR")?;
    Ok(base.join("aquilia-sync"))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let data_dir = data_dir(&cli)?;
    match cli.command {
        Command::Serve(args) => serve(*args, data_dir),
        Command::Token(cmd) => {
            let fleet = aq_sync_server::open_fleet(&data_dir)?;
            Tokens::init(&fleet)?;
            let tokens = Tokens::new(&fleet)?;
            match cmd {
                TokenCommand::Create { name, role } => {
                    let (info, secret) = tokens.create(&name, role, SystemTime::now())?;
                    eprintln!(
                        "token {} ({}, {}): keep it secret, it is not shown again",
                        info.id, info.name, info.role
                    );
                    println!("{secret}");
                }
                TokenCommand::List => {
                    for t in tokens.list()? {
                        println!("{}  {:<10} {}  {}", t.id, t.role, t.created_at, t.name);
                    }
                }
                TokenCommand::Revoke { id } => {
                    let t = tokens.revoke(&id)?;
                    println!("revoked {} ({})", t.id, t.name);
                }
            }
            Ok(())
        }
    }
}

fn serve(args: ServeArgs, data_dir: PathBuf) -> anyhow::Result<()> {
    let level: tracing::Level = args
        .log_level
        .parse()
        .with_context(|| format!("invalid log level {:?}", args.log_level))?;
    // rumqttd logs ordinary disconnects as errors: it speaks only at debug and below.
    let broker_level = if level >= tracing::Level::DEBUG {
        tracing_subscriber::filter::LevelFilter::from_level(level)
    } else {
        tracing_subscriber::filter::LevelFilter::OFF
    };
    let filter = tracing_subscriber::filter::Targets::new()
        .with_default(level)
        .with_target("rumqttd", broker_level);
    {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .with(filter)
            .init();
    }
    let tls = match (args.no_tls, args.tls_cert, args.tls_key) {
        (true, _, _) => TlsMode::Off,
        (false, Some(cert), Some(key)) => TlsMode::Files { cert, key },
        _ => TlsMode::Generated {
            names: args.tls_names,
        },
    };
    let (max_connections, header_read_timeout) = (args.max_connections, args.header_read_timeout);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let max_requests = args.max_requests.map_or(8 * cores, |n| n as usize);
    let options = ServerOptions {
        data_dir,
        addr: args.addr,
        tls,
        allow_unsigned: args.allow_unsigned,
        max_body: args.max_body,
        drain: Duration::from_secs(30),
        upload_grace: Duration::from_secs(24 * 3600),
        mqtt: match args.mqtt_url {
            Some(url) => MqttMode::External { url },
            None => MqttMode::Embedded {
                listen: args.mqtt_listen,
            },
        },
        mqtt_advertise: args.mqtt_advertise,
        topic_prefix: args.topic_prefix,
        work_threads: args.work_threads.map_or(cores, |n| n as usize),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("aq-http")
        // Below the work pool, which `start` makes from this thread.
        .on_thread_start(aq_http_server::priority::lower_each_thread(args.http_nice))
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(async move {
        let mut started = aq_sync_server::start(&options).await.with_context(|| {
            format!(
                "failed to start the server in {}",
                options.data_dir.display()
            )
        })?;
        let addr = server::bound(&started.listener)?;
        let scheme = if started.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut notes = vec![format!("data {}", options.data_dir.display())];
        if let Some(ca) = &started.ca_file {
            notes.push(format!("ca {}", ca.display()));
        }
        notes.push(format!("mqtt {}", started.mqtt_url));
        if let Some(t) = &started.admin_token_file {
            notes.push(format!("first admin token in {}", t.display()));
        }
        started.spawn_fleet();
        println!("listening on {scheme}://{addr} ({})", notes.join("; "));
        server::serve(
            started.listener,
            started.tls,
            started.state,
            aq_http_server::Limits {
                max_connections: max_connections as usize,
                header_read_timeout,
                max_buf_size: None,
                max_in_flight: Some(max_requests),
            },
            server::shutdown_signal(),
            options.drain,
        )
        .await;
        anyhow::Ok(())
    })
}
