//! The `ucwa` connector: one task per signed-in account. Each signs in (autodiscover →
//! token), creates an application, subscribes its share of the contacts, and runs the event
//! channel: one pending GET at a time, the next one issued before the previous page is
//! processed (a reader task feeds pages in order to the processor). A `contactPresence`
//! event → GET that resource → Observation. `resume` → subscribe again; `resync` → fetch
//! every contact again (flagged resync). Subscriptions are extended on a timer and on the
//! server's "about to expire" event. A vanished application or an expired token starts the
//! account over.

use super::client::{resolve, UcwaClient, UcwaError};
use super::config::{UcwaAccount, UcwaConfig};
use super::json::{self, EventsPage};
use super::normalize;
use crate::connectors::{
    CommandOutcome, CommandTarget, Connector, ConnectorContext, ConnectorError, ObservationSender,
};
use crate::metrics::{labels, Metrics};
use crate::model::{canonical_user, now_millis, Command, CommandAction, Observation, SourceRef};
use crate::shutdown::Shutdown;
use async_trait::async_trait;
use backon::BackoffBuilder;
use reqwest::Method;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

pub struct UcwaConnector {
    name: String,
    config: UcwaConfig,
    accounts: Vec<Arc<Account>>,
    commands: Arc<UcwaCommands>,
}

/// One signed-in user and what commands need of its application.
pub struct Account {
    user: String,
    client: UcwaClient,
    contacts: Vec<String>,
    /// Links of the current application (`me.*`), for set-presence commands.
    app: Mutex<Option<AppLinks>>,
    available: AtomicBool,
}

#[derive(Clone, Default)]
struct AppLinks {
    app_self: String,
    me: HashMap<String, String>,
}

impl UcwaConnector {
    pub fn new(name: &str, config: UcwaConfig) -> Result<Self, ConnectorError> {
        let contacts = config.all_contacts().map_err(|e| ConnectorError::Config {
            connector: name.to_string(),
            reason: format!("contacts_file: {e}"),
        })?;
        let n = config.accounts.len().max(1);
        let accounts: Vec<Arc<Account>> = config
            .accounts
            .iter()
            .enumerate()
            .map(|(i, a): (usize, &UcwaAccount)| {
                Arc::new(Account {
                    user: canonical_user(&a.username),
                    client: UcwaClient::new(
                        &config.autodiscover_url,
                        &a.username,
                        a.password.expose(),
                        config.request_timeout,
                        config.max_body_bytes,
                    ),
                    // Spread contacts round-robin over the accounts.
                    contacts: contacts
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| j % n == i)
                        .map(|(_, c)| c.clone())
                        .collect(),
                    app: Mutex::new(None),
                    available: AtomicBool::new(false),
                })
            })
            .collect();
        let commands = Arc::new(UcwaCommands {
            name: name.to_string(),
            accounts: accounts.clone(),
            contacts: contacts.iter().cloned().collect(),
            timeout: config.request_timeout,
        });
        Ok(UcwaConnector {
            name: name.to_string(),
            config,
            accounts,
            commands,
        })
    }
}

/// Why an account session ended.
enum Ended {
    Shutdown,
    Restart(UcwaError),
}

/// State of one application's session.
struct AppSession {
    app_self: String,
    /// Subscription self hrefs with their contacts.
    subs: Vec<(String, Vec<String>)>,
    /// contactPresence href → user, learned from events (the resource does not name them).
    hrefs: HashMap<String, String>,
    /// Last normalized presence and note per user (a note event re-emits the presence).
    last: HashMap<String, (json::ContactPresence, Option<String>)>,
    /// Users seen in this session: their first state is a snapshot, not a notification.
    seen: HashSet<String>,
}

struct Ctx<'a> {
    me: &'a UcwaConnector,
    account: &'a Account,
    tx: &'a ObservationSender,
    metrics: &'a Metrics,
}

impl Ctx<'_> {
    fn error(&self, e: &UcwaError, during: &str) {
        self.metrics
            .connector_errors
            .get_or_create(&labels([
                ("connector", &self.me.name),
                ("error_type", e.kind()),
            ]))
            .inc();
        tracing::warn!(connector = %self.me.name, account = %self.account.user, error = %e, during, "ucwa");
    }

    fn timeout(&self) -> Duration {
        self.me.config.request_timeout
    }

    /// Creates the application and subscribes the account's contacts.
    async fn start_app(&self, apps_url: &str) -> Result<AppSession, UcwaError> {
        let c = &self.me.config;
        let endpoint = uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            format!("{}/{}/{}", self.me.name, self.account.user, now_millis()).as_bytes(),
        )
        .to_string();
        let r = self
            .account
            .client
            .call(
                Method::POST,
                apps_url,
                Some(json::application_body(&c.user_agent, &endpoint, &c.culture)),
                self.timeout(),
            )
            .await?;
        let app = json::parse_application(&r.body)?;
        let app_self = resolve(apps_url, &app.self_href);
        *self.account.app.lock().expect("lock") = Some(AppLinks {
            app_self: app_self.clone(),
            me: app.me.as_ref().map(|m| m.links.clone()).unwrap_or_default(),
        });
        self.account.available.store(false, Ordering::Relaxed);
        let mut session = AppSession {
            app_self: app_self.clone(),
            subs: Vec::new(),
            hrefs: HashMap::new(),
            last: HashMap::new(),
            seen: HashSet::new(),
        };
        let subs_href = app
            .people_links
            .get("presenceSubscriptions")
            .ok_or_else(|| UcwaError::SignIn("application without presenceSubscriptions".into()))?;
        self.subscribe(
            &mut session,
            &resolve(&app_self, subs_href),
            &self.account.contacts,
        )
        .await?;
        Ok(session)
    }

    async fn subscribe(
        &self,
        session: &mut AppSession,
        subs_url: &str,
        contacts: &[String],
    ) -> Result<(), UcwaError> {
        let c = &self.me.config;
        if contacts.is_empty() {
            return Ok(());
        }
        let first = &contacts[..contacts.len().min(c.contacts_per_request)];
        let r = self
            .account
            .client
            .call(
                Method::POST,
                subs_url,
                Some(json::subscription_body(c.subscription_minutes, first)),
                self.timeout(),
            )
            .await?;
        let sub = json::parse_subscription(&r.body)?;
        let sub_self = resolve(subs_url, &sub.self_href);
        if let Some(add) = &sub.add_members {
            let add = resolve(subs_url, add);
            for more in contacts[first.len()..].chunks(c.contacts_per_request) {
                self.account
                    .client
                    .call(
                        Method::POST,
                        &add,
                        Some(json::add_members_body(more)),
                        self.timeout(),
                    )
                    .await?;
            }
        }
        tracing::info!(connector = %self.me.name, account = %self.account.user, contacts = contacts.len(), "ucwa: subscribed");
        session.subs.push((sub_self, contacts.to_vec()));
        Ok(())
    }

    /// Extends every subscription; one the server forgot is created again.
    async fn renew(&self, session: &mut AppSession) -> Result<(), UcwaError> {
        let minutes = self.me.config.subscription_minutes;
        let mut lost = Vec::new();
        for (i, (href, _)) in session.subs.iter().enumerate() {
            let sep = if href.contains('?') { '&' } else { '?' };
            let url = format!("{href}{sep}duration={minutes}");
            match self
                .account
                .client
                .call(Method::POST, &url, None, self.timeout())
                .await
            {
                Ok(_) => {}
                Err(UcwaError::NotFound { .. }) => lost.push(i),
                Err(e) => return Err(e),
            }
        }
        for i in lost.into_iter().rev() {
            let (_, contacts) = session.subs.remove(i);
            tracing::info!(connector = %self.me.name, account = %self.account.user, "ucwa: subscription expired; subscribing again");
            let subs_url = self.subscriptions_url(session).await?;
            self.subscribe(session, &subs_url, &contacts).await?;
        }
        Ok(())
    }

    async fn subscriptions_url(&self, session: &AppSession) -> Result<String, UcwaError> {
        let r = self
            .account
            .client
            .call(Method::GET, &session.app_self, None, self.timeout())
            .await?;
        let app = json::parse_application(&r.body)?;
        app.people_links
            .get("presenceSubscriptions")
            .map(|h| resolve(&session.app_self, h))
            .ok_or_else(|| UcwaError::SignIn("application without presenceSubscriptions".into()))
    }

    /// GET a contactPresence resource and send it on. `Ok(false)`: pipeline closed.
    async fn fetch_presence(
        &self,
        session: &mut AppSession,
        href: &str,
        user: &str,
        resync: bool,
    ) -> Result<bool, UcwaError> {
        let url = resolve(&session.app_self, href);
        let r = self
            .account
            .client
            .call(Method::GET, &url, None, self.timeout())
            .await?;
        let p = json::parse_contact_presence(&r.body)?;
        let note = session.last.get(user).and_then(|(_, n)| n.clone());
        session.hrefs.insert(href.to_string(), user.to_string());
        session.last.insert(user.to_string(), (p, note));
        self.emit(session, user, resync).await
    }

    async fn emit(
        &self,
        session: &mut AppSession,
        user: &str,
        resync: bool,
    ) -> Result<bool, UcwaError> {
        let Some((p, note)) = session.last.get(user) else {
            return Ok(true);
        };
        let first = session.seen.insert(user.to_string());
        let obs = Observation {
            source: SourceRef {
                kind: "ucwa".into(),
                connector: self.me.name.clone(),
                server: Some(super::client::origin(&session.app_self)),
                server_time: None,
            },
            user: user.to_string(),
            state: normalize::normalize(p, note.as_deref()),
            observed_at: now_millis(),
            resync: resync || first,
        };
        Ok(self.tx.send(obs).await.is_ok())
    }

    /// Handles one page of events in order. `Ok(false)`: pipeline closed.
    async fn process(&self, session: &mut AppSession, page: EventsPage) -> Result<bool, UcwaError> {
        if page.resume.is_some() {
            // The server cleaned up after our absence: every subscription is gone.
            tracing::warn!(connector = %self.me.name, account = %self.account.user, "ucwa: resume: subscribing again");
            session.subs.clear();
            session.seen.clear();
            let subs_url = self.subscriptions_url(session).await?;
            self.subscribe(session, &subs_url, &self.account.contacts.clone())
                .await?;
        }
        if page.resync.is_some() {
            tracing::warn!(connector = %self.me.name, account = %self.account.user, "ucwa: resync: fetching every contact again");
            let known: Vec<(String, String)> = session
                .hrefs
                .iter()
                .map(|(h, u)| (h.clone(), u.clone()))
                .collect();
            for (href, user) in known {
                if !self.fetch_presence(session, &href, &user, true).await? {
                    return Ok(false);
                }
            }
        }
        for ev in page.events {
            match (ev.link_rel.as_str(), ev.kind.as_str()) {
                ("contactPresence", "updated" | "added") => {
                    let user = ev
                        .in_href
                        .as_deref()
                        .and_then(json::user_from_href)
                        .or_else(|| json::user_from_href(&ev.link_href))
                        .or_else(|| session.hrefs.get(&ev.link_href).cloned());
                    let Some(user) = user.map(|u| canonical_user(&u)) else {
                        self.error(
                            &UcwaError::SignIn(format!("no user for {}", ev.link_href)),
                            "event",
                        );
                        continue;
                    };
                    match self
                        .fetch_presence(session, &ev.link_href, &user, false)
                        .await
                    {
                        Ok(true) => {}
                        Ok(false) => return Ok(false),
                        // One contact's presence failing is not the session failing.
                        Err(
                            e @ (UcwaError::NotFound { .. }
                            | UcwaError::Rejected { .. }
                            | UcwaError::Parse(_)),
                        ) => self.error(&e, "contact presence"),
                        Err(e) => return Err(e),
                    }
                }
                ("contactNote", "updated" | "added") => {
                    let Some(user) = ev
                        .in_href
                        .as_deref()
                        .and_then(json::user_from_href)
                        .or_else(|| json::user_from_href(&ev.link_href))
                        .map(|u| canonical_user(&u))
                    else {
                        continue;
                    };
                    let url = resolve(&session.app_self, &ev.link_href);
                    let r = self
                        .account
                        .client
                        .call(Method::GET, &url, None, self.timeout())
                        .await?;
                    let note = json::parse_contact_note(&r.body)?;
                    if let Some(entry) = session.last.get_mut(&user) {
                        entry.1 = note;
                        if !self.emit(session, &user, false).await? {
                            return Ok(false);
                        }
                    }
                }
                ("presenceSubscription", "updated") => {
                    // About to expire: extend now.
                    self.renew(session).await?;
                }
                ("presenceSubscription", "deleted") => {
                    self.renew(session).await?;
                }
                _ => {}
            }
        }
        Ok(true)
    }
}

/// Reads the event channel: one pending GET at a time, following `next` (or `resume` /
/// `resync`) before the page is processed. Transient errors travel with the pages (for
/// counting); the error that ends the channel is the return value.
async fn read_events(
    client: &UcwaClient,
    mut url: String,
    timeout: Duration,
    request_timeout: Duration,
    pages: mpsc::Sender<Result<EventsPage, UcwaError>>,
) -> UcwaError {
    let closed = || UcwaError::SignIn("event processing stopped".into());
    let mut backoff = new_backoff();
    loop {
        let sep = if url.contains('?') { '&' } else { '?' };
        let full = if url.contains("timeout=") {
            url.clone()
        } else {
            format!("{url}{sep}timeout={}", timeout.as_secs())
        };
        let r = client
            .call(Method::GET, &full, None, timeout + request_timeout)
            .await;
        let page = match r.and_then(|r| Ok(json::parse_events(&r.body)?)) {
            Ok(p) => p,
            Err(UcwaError::PGetReplaced) => {
                // Someone replaced our pending GET; ask again.
                if pages.send(Err(UcwaError::PGetReplaced)).await.is_err() {
                    return closed();
                }
                continue;
            }
            Err(e @ (UcwaError::Transport(_) | UcwaError::Throttled(_))) => {
                if pages.send(Err(e)).await.is_err() {
                    return closed();
                }
                tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(30))).await;
                continue;
            }
            Err(e) => return e,
        };
        backoff = new_backoff();
        let next = page
            .next
            .clone()
            .or_else(|| page.resume.clone())
            .or_else(|| page.resync.clone());
        match next {
            Some(n) => url = resolve(&url, &n),
            None => return UcwaError::SignIn("event page without a next link".into()),
        }
        if pages.send(Ok(page)).await.is_err() {
            return closed();
        }
    }
}

fn new_backoff() -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(60))
        .with_jitter()
        .without_max_times()
        .build()
}

impl UcwaConnector {
    async fn run_account(&self, account: Arc<Account>, ctx: &ConnectorContext) {
        let mut shutdown = ctx.shutdown.clone();
        let mut backoff = new_backoff();
        let cx = Ctx {
            me: self,
            account: &account,
            tx: &ctx.observations,
            metrics: &ctx.metrics,
        };
        loop {
            let started = async {
                let apps = account.client.sign_in(self.config.request_timeout).await?;
                cx.start_app(&apps).await
            };
            let session = tokio::select! {
                _ = shutdown.recv() => return,
                s = started => s,
            };
            let session = match session {
                Ok(s) => s,
                Err(e) => {
                    cx.error(&e, "sign-in");
                    tokio::select! {
                        _ = shutdown.recv() => return,
                        _ = tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(60))) => {}
                    }
                    continue;
                }
            };
            backoff = new_backoff();
            match self.serve(&cx, session, &mut shutdown).await {
                Ended::Shutdown => return,
                Ended::Restart(e) => {
                    cx.error(&e, "session");
                    tracing::warn!(connector = %self.name, account = %account.user, "ucwa: starting the application over");
                }
            }
        }
    }

    async fn serve(&self, cx: &Ctx<'_>, mut session: AppSession, shutdown: &mut Shutdown) -> Ended {
        let events = {
            let r = cx
                .account
                .client
                .call(
                    Method::GET,
                    &session.app_self,
                    None,
                    self.config.request_timeout,
                )
                .await
                .and_then(|r| Ok(json::parse_application(&r.body)?));
            match r {
                Ok(app) => resolve(&session.app_self, &app.events_href),
                Err(e) => return Ended::Restart(e),
            }
        };
        let (tx, mut pages) = mpsc::channel(4);
        let reader = read_events(
            &cx.account.client,
            events,
            self.config.event_timeout,
            self.config.request_timeout,
            tx,
        );
        tokio::pin!(reader);
        let mut renew = tokio::time::interval_at(
            tokio::time::Instant::now() + self.config.renew_interval,
            self.config.renew_interval,
        );
        let mut activity = tokio::time::interval(self.config.report_activity_interval);
        let ended = loop {
            tokio::select! {
                _ = shutdown.recv() => break Ended::Shutdown,
                e = &mut reader => {
                    // Pages read before the channel ended are still ours to process.
                    while let Ok(Ok(page)) = pages.try_recv() {
                        if !matches!(cx.process(&mut session, page).await, Ok(true)) {
                            break;
                        }
                    }
                    break Ended::Restart(e);
                }
                page = pages.recv() => match page {
                    None => break Ended::Restart(UcwaError::SignIn("event channel closed".into())),
                    Some(Ok(page)) => match cx.process(&mut session, page).await {
                        Ok(true) => {}
                        Ok(false) => break Ended::Shutdown,
                        Err(e) => break Ended::Restart(e),
                    },
                    Some(Err(e @ (UcwaError::PGetReplaced | UcwaError::Transport(_) | UcwaError::Throttled(_)))) => cx.error(&e, "event channel"),
                    Some(Err(e)) => break Ended::Restart(e),
                },
                _ = renew.tick() => {
                    if let Err(e) = cx.renew(&mut session).await {
                        break Ended::Restart(e);
                    }
                }
                _ = activity.tick() => {
                    if cx.account.available.load(Ordering::Relaxed) {
                        let link = cx.account.app.lock().expect("lock").as_ref().and_then(|a| a.me.get("reportMyActivity").map(|h| resolve(&a.app_self, h)));
                        if let Some(url) = link {
                            if let Err(e) = cx.account.client.call(Method::POST, &url, None, self.config.request_timeout).await {
                                cx.error(&e, "reportMyActivity");
                            }
                        }
                    }
                }
            }
        };
        if matches!(ended, Ended::Shutdown) {
            // Deleting the application tears down its subscriptions on the server.
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                cx.account.client.call(
                    Method::DELETE,
                    &session.app_self,
                    None,
                    self.config.request_timeout,
                ),
            )
            .await;
        }
        *cx.account.app.lock().expect("lock") = None;
        ended
    }
}

#[async_trait]
impl Connector for UcwaConnector {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "ucwa"
    }

    fn command_target(&self) -> Option<Arc<dyn CommandTarget>> {
        Some(self.commands.clone())
    }

    async fn run(self: Arc<Self>, ctx: ConnectorContext) -> Result<(), ConnectorError> {
        ctx.metrics
            .subscriptions
            .get_or_create(&labels([
                ("connector", &self.name),
                ("state", "configured"),
            ]))
            .set(self.accounts.iter().map(|a| a.contacts.len() as i64).sum());
        let runs = self
            .accounts
            .iter()
            .map(|a| self.run_account(a.clone(), &ctx));
        futures::future::join_all(runs).await;
        Ok(())
    }
}

/// Set presence: UCWA sets only the signed-in user's own presence, so commands work for
/// the configured accounts; for a watched contact the answer is UNSUPPORTED.
pub struct UcwaCommands {
    name: String,
    accounts: Vec<Arc<Account>>,
    contacts: HashSet<String>,
    timeout: Duration,
}

impl UcwaCommands {
    async fn set(&self, account: &Account, cmd: &Command) -> Result<(), CommandOutcome> {
        let failed = |e: UcwaError| CommandOutcome::Failed(e.to_string());
        let Some(links) = account.app.lock().expect("lock").clone() else {
            return Err(CommandOutcome::Failed(
                "the account's UCWA application is not running yet".into(),
            ));
        };
        if !account.available.load(Ordering::Relaxed) {
            let href = links.me.get("makeMeAvailable").ok_or_else(|| {
                CommandOutcome::Failed("application has no makeMeAvailable link".into())
            })?;
            match account
                .client
                .call(
                    Method::POST,
                    &resolve(&links.app_self, href),
                    Some(json::make_me_available_body()),
                    self.timeout,
                )
                .await
            {
                Ok(_) => {}
                Err(UcwaError::Rejected { subcode, .. })
                    if subcode.as_deref() == Some("AlreadyExists") => {}
                Err(e) => return Err(failed(e)),
            }
            account.available.store(true, Ordering::Relaxed);
        }
        // After makeMeAvailable the application's `me` carries the presence link.
        let r = account
            .client
            .call(Method::GET, &links.app_self, None, self.timeout)
            .await
            .map_err(failed)?;
        let app = json::parse_application(&r.body).map_err(|e| failed(e.into()))?;
        let me = app.me.map(|m| m.links).unwrap_or_default();
        let presence = me.get("presence").ok_or_else(|| {
            CommandOutcome::Failed("no presence link after makeMeAvailable".into())
        })?;
        *account.app.lock().expect("lock") = Some(AppLinks {
            app_self: links.app_self.clone(),
            me: me.clone(),
        });
        let body = match cmd.action {
            // An empty body resets to the automatic (calendar/activity) state.
            CommandAction::ClearPresence => json::set_presence_body(None),
            CommandAction::SetPresence => {
                let a = normalize::availability_for_command(
                    cmd.availability
                        .unwrap_or(crate::model::Availability::Unknown),
                    cmd.activity,
                )
                .map_err(CommandOutcome::Rejected)?;
                json::set_presence_body(a)
            }
        };
        account
            .client
            .call(
                Method::POST,
                &resolve(&links.app_self, presence),
                Some(body),
                self.timeout,
            )
            .await
            .map_err(|e| match e {
                UcwaError::Rejected {
                    status, message, ..
                } if status < 500 => CommandOutcome::Rejected(message),
                other => failed(other),
            })?;
        Ok(())
    }
}

#[async_trait]
impl CommandTarget for UcwaCommands {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "ucwa"
    }

    fn owns(&self, user: &str) -> bool {
        self.contacts.contains(user) || self.accounts.iter().any(|a| a.user == user)
    }

    async fn apply(&self, cmd: &Command) -> CommandOutcome {
        let Some(account) = self.accounts.iter().find(|a| a.user == cmd.user) else {
            return CommandOutcome::Unsupported(format!(
                "UCWA can set only the presence of a signed-in user; {} is watched, not signed in (add it to accounts to set its presence)",
                cmd.user
            ));
        };
        match self.set(account, cmd).await {
            Ok(()) => CommandOutcome::Applied,
            Err(o) => o,
        }
    }
}
