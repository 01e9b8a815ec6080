//! The `presence-bridge` command line. Everything it does lives in the library.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use presence_bridge::config::{self, Config};
use presence_bridge::simulate::graph as graph_sim;
use presence_bridge::simulate::pws as pws_sim;
use presence_bridge::simulate::sip as sip_sim;
use presence_bridge::simulate::ucwa as ucwa_sim;
use presence_bridge::{codec, replay, runtime};
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "presence-bridge",
    version,
    about = "Presence sources → Avro change events on Kafka, NATS and a local archive"
)]
struct Cli {
    /// Log format: `text` or `json`. Level from RUST_LOG (default info).
    #[arg(long, global = true, default_value = "text")]
    log_format: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the bridge with a configuration file.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a demo with no broker: simulated users, events archived under ./presence-data.
    Demo {
        #[arg(long, default_value = "./presence-data")]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 50)]
        users: u32,
        /// Presence changes per second.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        #[arg(long, default_value = "127.0.0.1:9464")]
        listen: SocketAddr,
        /// Stop after this long (e.g. 30s); default: until Ctrl-C.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Users of the simulated Cisco PWS server the demo also watches (0: none).
        #[arg(long, default_value_t = 20)]
        pws_users: u32,
        /// Users of the simulated UCWA (Lync/Skype) server the demo also watches (0: none).
        #[arg(long, default_value_t = 20)]
        ucwa_users: u32,
        /// Users of the simulated Microsoft Graph (Teams) the demo also watches (0: none).
        #[arg(long, default_value_t = 20)]
        graph_users: u32,
        /// Users of the simulated SIP presence server the demo also watches (0: none).
        #[arg(long, default_value_t = 20)]
        sip_users: u32,
    },
    /// Print archived events as JSON lines.
    Replay {
        /// Archive directory.
        #[arg(long)]
        from: PathBuf,
    },
    /// Check a configuration file; every problem is named with its key and the fix.
    CheckConfig { file: PathBuf },
    /// Print the Avro schemas (or write them to a directory).
    Schemas {
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run a simulated presence server (for trying the bridge without the real one).
    Simulate {
        #[command(subcommand)]
        source: SimulateCmd,
    },
}

#[derive(Subcommand)]
enum SimulateCmd {
    /// Cisco IM&P Presence Web Service (REST at /presence-service, control API at /_sim).
    Pws {
        #[arg(long, default_value = "127.0.0.1:8082")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        users: u32,
        /// Random presence changes per second over all users.
        #[arg(long, default_value_t = 5.0)]
        rate: f64,
        #[arg(long, default_value = "example.com")]
        domain: String,
        #[arg(long, default_value = "pwsapp")]
        app_user: String,
        /// Application user password (the simulator accepts only this one).
        #[arg(long, env = "PWS_SIM_APP_PASSWORD", default_value = "pwsapp-secret")]
        app_password: String,
    },
    /// Lync / Skype for Business UCWA (autodiscover at /autodiscover, control API at /_sim).
    Ucwa {
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        users: u32,
        /// Random presence changes per second over all users.
        #[arg(long, default_value_t = 5.0)]
        rate: f64,
        #[arg(long, default_value = "example.com")]
        domain: String,
        /// The password every simulated user signs in with.
        #[arg(long, env = "UCWA_SIM_PASSWORD", default_value = "ucwa-secret")]
        password: String,
    },
    /// Microsoft Graph presence (token endpoint, /v1.0 presence and subscriptions, webhooks).
    Graph {
        #[arg(long, default_value = "127.0.0.1:8444")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        users: u32,
        /// Random presence changes per second over all users.
        #[arg(long, default_value_t = 5.0)]
        rate: f64,
    },
    /// SIP presence server, Kamailio-like (SUBSCRIBE/NOTIFY for presence, dialog and
    /// message-summary; PUBLISH). UDP and TCP on one port; JSON control API with --http.
    Sip {
        /// SIP address (UDP and TCP).
        #[arg(long, default_value = "127.0.0.1:5080")]
        bind: SocketAddr,
        /// Numbered users user0001@DOMAIN … (ignored with --names).
        #[arg(long, default_value_t = 100)]
        users: u32,
        /// Explicit user names instead of numbered ones, comma-separated (alice,bob).
        #[arg(long, value_delimiter = ',')]
        names: Vec<String>,
        #[arg(long, default_value = "example.com")]
        domain: String,
        /// Random presence / call changes per second over all users.
        #[arg(long, default_value_t = 5.0)]
        rate: f64,
        /// Control API address (`/_sim/stats`, `/_sim/users/{aor}/presence`, …).
        #[arg(long)]
        http: Option<SocketAddr>,
        /// Append `[#<seq> @<unix ms>]` to every random note, so events can be matched to
        /// changes (latency measurement).
        #[arg(long)]
        stamp: bool,
        /// Require digest auth (407) for SUBSCRIBE/PUBLISH: USER:PASSWORD, comma-separated.
        #[arg(
            long,
            env = "SIP_SIM_AUTH",
            value_delimiter = ',',
            value_name = "USER:PASSWORD"
        )]
        auth: Vec<String>,
        /// Digest algorithm offered: MD5 or SHA-256.
        #[arg(long, default_value = "MD5")]
        auth_algorithm: String,
        /// Shortest subscription granted (shorter gets 423).
        #[arg(long, default_value_t = 60)]
        min_expires: u32,
        /// Longest subscription granted.
        #[arg(long, default_value_t = 3600)]
        max_expires: u32,
        /// Address for Contact headers when --bind is a wildcard address.
        #[arg(long)]
        advertise: Option<SocketAddr>,
    },
}

fn init_tracing(format: &str, default_level: &str) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    if !std::env::var("RUST_LOG")
        .unwrap_or_default()
        .contains("rsipstack")
    {
        // rsipstack logs every SIP message with its raw text at INFO: far too much for
        // production logs, and it would copy Authorization headers into them.
        if let Ok(d) = "rsipstack=warn".parse() {
            filter = filter.add_directive(d);
        }
    }
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::CheckConfig { file } => match Config::load(&file) {
            Ok(c) => {
                println!(
                    "{}: OK ({} connector(s), sinks: {})",
                    file.display(),
                    c.connectors.names().len(),
                    [
                        c.sinks.archive.as_ref().map(|_| "archive"),
                        c.sinks.kafka.as_ref().map(|_| "kafka"),
                        c.sinks.nats.as_ref().map(|_| "nats"),
                    ]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(", ")
                );
                Ok(())
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
        },
        Cmd::Schemas { out } => {
            for s in codec::all_schemas() {
                match &out {
                    Some(dir) => {
                        std::fs::create_dir_all(dir)?;
                        let p = dir.join(format!("{}.avsc", s.name));
                        std::fs::write(&p, s.json)?;
                        println!("{} (fingerprint {})", p.display(), s.fingerprint_hex());
                    }
                    None => {
                        println!("// {} — CRC-64-AVRO {}", s.name, s.fingerprint_hex());
                        println!("{}", s.json);
                    }
                }
            }
            Ok(())
        }
        Cmd::Replay { from } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let mut bad = 0u64;
            let mut write_err = None;
            replay::read_archive(&from, |r| match r {
                Ok(c) => {
                    if write_err.is_none() {
                        if let Err(e) = serde_json::to_writer(&mut out, &c)
                            .map_err(std::io::Error::other)
                            .and_then(|_| out.write_all(b"\n"))
                        {
                            write_err = Some(e);
                        }
                    }
                }
                Err(e) => {
                    bad += 1;
                    eprintln!("skipped: {e}");
                }
            })
            .with_context(|| format!("reading {}", from.display()))?;
            if let Err(e) = out.flush() {
                write_err.get_or_insert(e);
            }
            if let Some(e) = write_err {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    return Err(e.into());
                }
            }
            if bad > 0 {
                eprintln!("{bad} problem(s) reported above");
            }
            Ok(())
        }
        Cmd::Run { config } => {
            init_tracing(&cli.log_format, "info");
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(2);
                }
            };
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(runtime::run_until_signal(cfg))?;
            Ok(())
        }
        Cmd::Demo {
            data_dir,
            users,
            rate,
            listen,
            duration,
            pws_users,
            ucwa_users,
            graph_users,
            sip_users,
        } => {
            // Warnings only: the live summary is the demo's output.
            init_tracing(&cli.log_format, "warn");
            let cfg = config::demo_config(&data_dir, listen, users, rate);
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(demo(
                cfg,
                duration,
                pws_users,
                ucwa_users,
                graph_users,
                sip_users,
            ))
        }
        Cmd::Simulate { source } => {
            init_tracing(&cli.log_format, "info");
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(simulate(source))
        }
    }
}

async fn simulate(source: SimulateCmd) -> anyhow::Result<()> {
    match source {
        SimulateCmd::Pws {
            listen,
            users,
            rate,
            domain,
            app_user,
            app_password,
        } => {
            let sim = pws_sim::start(
                listen,
                pws_sim::PwsSimConfig {
                    users,
                    domain,
                    app_user,
                    app_password,
                    change_rate: rate,
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("listen on {listen}"))?;
            println!("PWS simulator: {} users, {rate} changes/s", users);
            println!("  REST base:   {}", sim.base_url());
            println!("  control API: http://{}/_sim/stats", sim.addr());
            println!(
                "  users:       {} … {}",
                sim.user_uri(1),
                sim.user_uri(users)
            );
            runtime::wait_for_signal().await;
            sim.shutdown().await;
            Ok(())
        }
        SimulateCmd::Graph {
            listen,
            users,
            rate,
        } => {
            let sim = graph_sim::start(
                listen,
                graph_sim::GraphSimConfig {
                    users,
                    change_rate: rate,
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("listen on {listen}"))?;
            let d = graph_sim::GraphSimConfig::default();
            println!("Graph simulator: {users} users, {rate} changes/s");
            println!("  Graph base:  {}", sim.base_url());
            println!("  token URL:   {}", sim.token_url());
            println!(
                "  client id:   {} (secret {})",
                d.client_id, d.client_secret
            );
            println!(
                "  users:       {} … {} (password {})",
                sim.upn(1),
                sim.upn(users),
                d.user_password
            );
            runtime::wait_for_signal().await;
            sim.shutdown().await;
            Ok(())
        }
        SimulateCmd::Sip {
            bind,
            users,
            names,
            domain,
            rate,
            http,
            stamp,
            auth,
            auth_algorithm,
            min_expires,
            max_expires,
            advertise,
        } => {
            let auth = if auth.is_empty() {
                None
            } else {
                let mut accounts = std::collections::BTreeMap::new();
                for a in &auth {
                    let Some((user, password)) = a.split_once(':') else {
                        bail!("--auth wants USER:PASSWORD, got {a:?}");
                    };
                    accounts.insert(user.to_string(), password.to_string());
                }
                Some(sip_sim::SipSimAuth {
                    realm: domain.clone(),
                    algorithm: auth_algorithm,
                    accounts,
                })
            };
            let sim = sip_sim::start(
                bind,
                sip_sim::SipSimConfig {
                    users,
                    names,
                    domain,
                    change_rate: rate,
                    stamp_notes: stamp,
                    auth,
                    http,
                    min_expires,
                    max_expires,
                    advertise,
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("SIP simulator on {bind}"))?;
            let aors = sim.users();
            println!("SIP simulator: {} users, {rate} changes/s", aors.len());
            println!("  SIP:         {} (UDP and TCP)", sim.addr());
            if let Some(url) = sim.control_url() {
                println!("  control API: {url}/stats");
            }
            println!(
                "  users:       sip:{} … sip:{}",
                aors.first().map_or("", String::as_str),
                aors.last().map_or("", String::as_str)
            );
            println!("  events:      presence, dialog, message-summary");
            runtime::wait_for_signal().await;
            sim.shutdown().await;
            Ok(())
        }
        SimulateCmd::Ucwa {
            listen,
            users,
            rate,
            domain,
            password,
        } => {
            let sim = ucwa_sim::start(
                listen,
                ucwa_sim::UcwaSimConfig {
                    users,
                    domain,
                    password,
                    change_rate: rate,
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("listen on {listen}"))?;
            println!("UCWA simulator: {users} users, {rate} changes/s");
            println!("  autodiscover: {}", sim.autodiscover_url());
            println!("  control API:  {}", sim.control_url());
            println!("  users:        {} … {}", sim.upn(1), sim.upn(users));
            runtime::wait_for_signal().await;
            sim.shutdown().await;
            Ok(())
        }
    }
}

/// Adds a simulated Graph and a `graph` connector (one service account) watching it.
async fn demo_graph(cfg: &mut Config, users: u32) -> anyhow::Result<graph_sim::GraphSimHandle> {
    let sim = graph_sim::start(
        "127.0.0.1:0".parse().expect("static address"),
        graph_sim::GraphSimConfig {
            users: users + 1,
            change_rate: (users as f64 / 10.0).max(0.5),
            ..Default::default()
        },
    )
    .await?;
    let listen = cfg.http.listen;
    if listen.port() == 0 {
        bail!("the demo's Graph webhook needs a fixed --listen port");
    }
    let defaults = graph_sim::GraphSimConfig::default();
    let ids: Vec<String> = (1..=users)
        .map(|n| format!("\"{}\"", sim.user_id(n)))
        .collect();
    let snippet = format!(
        "tenant = \"{tenant}\"\nclient_id = \"{cid}\"\nclient_secret = \"{secret}\"\ntoken_url = \"{token}\"\ngraph_url = \"{graph}\"\nservice_accounts = [{{ username = \"{svc}\", password = \"{pw}\" }}]\nusers = [{ids}]\nnotification_url = \"http://{listen}/graph/demo\"\n",
        tenant = defaults.tenant,
        cid = defaults.client_id,
        secret = defaults.client_secret,
        token = sim.token_url(),
        graph = sim.base_url(),
        svc = sim.upn(users + 1),
        pw = defaults.user_password,
        ids = ids.join(", "),
    );
    let graph: presence_bridge::connectors::graph::config::GraphConfig = toml::from_str(&snippet)?;
    cfg.connectors.graph.insert("demo-graph".into(), graph);
    Ok(sim)
}

/// Adds a simulated UCWA server and a `ucwa` connector (one account) watching it.
async fn demo_ucwa(cfg: &mut Config, users: u32) -> anyhow::Result<ucwa_sim::UcwaSimHandle> {
    let sim = ucwa_sim::start(
        "127.0.0.1:0".parse().expect("static address"),
        ucwa_sim::UcwaSimConfig {
            users: users + 1,
            password: "ucwa-secret".into(),
            change_rate: (users as f64 / 10.0).max(0.5),
            ..Default::default()
        },
    )
    .await?;
    let contacts: Vec<String> = (1..=users)
        .map(|n| format!("\"{}\"", sim.user_uri(n)))
        .collect();
    let snippet = format!(
        "autodiscover_url = \"{}\"\naccounts = [{{ username = \"{}\", password = \"ucwa-secret\" }}]\ncontacts = [{}]\n",
        sim.autodiscover_url(),
        sim.upn(users + 1),
        contacts.join(", ")
    );
    let ucwa: presence_bridge::connectors::ucwa::config::UcwaConfig = toml::from_str(&snippet)?;
    cfg.connectors.ucwa.insert("demo-ucwa".into(), ucwa);
    Ok(sim)
}

/// Adds a simulated SIP presence server and a `sip` connector (presence and dialog
/// packages) watching it to the demo.
async fn demo_sip(cfg: &mut Config, users: u32) -> anyhow::Result<sip_sim::SipSimHandle> {
    let sim = sip_sim::start(
        "127.0.0.1:0".parse().expect("static address"),
        sip_sim::SipSimConfig {
            users,
            change_rate: (users as f64 / 10.0).max(0.5),
            ..Default::default()
        },
    )
    .await?;
    let snippet = sip_sim::demo_sip_snippet(sim.addr(), users, sim.domain());
    let sip: presence_bridge::connectors::sip::config::SipConfig = toml::from_str(&snippet)?;
    cfg.connectors.sip.insert("demo-sip".into(), sip);
    Ok(sim)
}

/// Adds a simulated PWS server and a `pws` connector watching it to the demo.
async fn demo_pws(cfg: &mut Config, users: u32) -> anyhow::Result<pws_sim::PwsSimHandle> {
    let sim = pws_sim::start(
        "127.0.0.1:0".parse().expect("static address"),
        pws_sim::PwsSimConfig {
            users: users + 1,
            change_rate: (users as f64 / 10.0).max(0.5),
            ..Default::default()
        },
    )
    .await?;
    let contacts: Vec<String> = (1..=users)
        .map(|n| format!("\"{}\"", sim.user_uri(n)))
        .collect();
    let listen = cfg.http.listen;
    if listen.port() == 0 {
        bail!("the demo's PWS callback needs a fixed --listen port");
    }
    let snippet = format!(
        "base_url = \"{}\"\napp_user = \"pwsapp\"\napp_password = \"pwsapp-secret\"\nwatchers = [\"{}\"]\ncontacts = [{}]\ncallback_url = \"http://{listen}/pws/demo\"\nfailsafe_interval = \"1m\"\n",
        sim.base_url(),
        sim.user_name(users + 1),
        contacts.join(", ")
    );
    let pws: presence_bridge::connectors::pws::config::PwsConfig = toml::from_str(&snippet)?;
    cfg.connectors.pws.insert("demo-pws".into(), pws);
    Ok(sim)
}

async fn demo(
    mut cfg: Config,
    duration: Option<Duration>,
    pws_users: u32,
    ucwa_users: u32,
    graph_users: u32,
    sip_users: u32,
) -> anyhow::Result<()> {
    if cfg.connectors.synthetic.is_empty() {
        bail!("demo needs a synthetic connector");
    }
    let pws = if pws_users > 0 {
        Some(demo_pws(&mut cfg, pws_users).await?)
    } else {
        None
    };
    let ucwa = if ucwa_users > 0 {
        Some(demo_ucwa(&mut cfg, ucwa_users).await?)
    } else {
        None
    };
    let graph = if graph_users > 0 {
        Some(demo_graph(&mut cfg, graph_users).await?)
    } else {
        None
    };
    let sip = if sip_users > 0 {
        Some(demo_sip(&mut cfg, sip_users).await?)
    } else {
        None
    };
    let archive = cfg.archive_dir().expect("demo has an archive");
    let handle = runtime::start(cfg).await?;
    if let Some(sim) = &graph {
        println!(
            "simulated Microsoft Graph at {} ({graph_users} users) → connector demo-graph",
            sim.base_url()
        );
    }
    if let Some(sim) = &ucwa {
        println!(
            "simulated UCWA at {} ({ucwa_users} users) → connector demo-ucwa",
            sim.autodiscover_url()
        );
    }
    if let Some(sim) = &sip {
        println!(
            "simulated SIP presence server at {} ({sip_users} users) → connector demo-sip",
            sim.addr()
        );
    }
    if let Some(sim) = &pws {
        println!(
            "simulated Cisco PWS at {} ({pws_users} users) → connector demo-pws",
            sim.base_url()
        );
    }
    let tty = std::io::stdout().is_terminal();
    println!(
        "presence-bridge demo: simulated users → change events → Avro files in {}",
        archive.display()
    );
    println!(
        "metrics: http://{}/metrics   replay: presence-bridge replay --from {}   stop: Ctrl-C",
        handle.http_addr,
        archive.display()
    );
    let started = Instant::now();
    let mut last_total = 0u64;
    let mut last_t = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let deadline = duration.map(|d| tokio::time::Instant::now() + d);
    let mut printed_lines = 0;
    loop {
        tokio::select! {
            _ = runtime::wait_for_signal() => break,
            _ = async { tokio::time::sleep_until(deadline.unwrap()).await }, if deadline.is_some() => break,
            _ = tick.tick() => {}
        }
        let store = handle.store.clone();
        let states = tokio::task::spawn_blocking(move || store.all_states()).await??;
        let total = published_total(&handle.metrics.render());
        let rate = (total - last_total.min(total)) as f64 / last_t.elapsed().as_secs_f64();
        last_total = total;
        last_t = Instant::now();
        let mut counts = std::collections::BTreeMap::new();
        for (_, s) in &states {
            *counts.entry(s.state.availability.as_str()).or_insert(0u32) += 1;
        }
        let by: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let lines = [
            format!(
                "{:>5.0}s  events {:>8}  {:>7.1}/s  users {:>5}  outbox {:>5}",
                started.elapsed().as_secs_f64(),
                total,
                rate,
                states.len(),
                handle.outbox_depth()
            ),
            format!("       now: {}", by.join(" · ")),
        ];
        if tty && printed_lines > 0 {
            print!("\x1b[{printed_lines}A");
        }
        for l in &lines {
            if tty {
                println!("\x1b[2K{l}");
            } else {
                println!("{l}");
            }
        }
        printed_lines = lines.len();
    }
    handle.shutdown();
    handle.wait().await?;
    if let Some(sim) = pws {
        sim.shutdown().await;
    }
    if let Some(sim) = ucwa {
        sim.shutdown().await;
    }
    if let Some(sim) = graph {
        sim.shutdown().await;
    }
    if let Some(sim) = sip {
        sim.shutdown().await;
    }
    println!(
        "stopped. Archive: {} (read it with: presence-bridge replay --from {})",
        archive.display(),
        archive.display()
    );
    Ok(())
}

/// Sum of `presence_events_published_total` for the archive sink.
fn published_total(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("presence_events_published_total{") && l.contains("sink=\"archive\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
