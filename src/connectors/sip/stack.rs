//! The SIP transport and transaction layer, behind a small trait of ours.
//!
//! Everything with presence semantics (dialogs, refresh, digest, bodies) lives in our own
//! modules and speaks [`SipMessage`]. This module only moves messages: it sends a request
//! as an RFC 3261 non-INVITE client transaction (Timer E retransmissions on UDP, Timer F
//! timeout → a synthesized 408) and hands incoming requests over as server transactions
//! whose retransmissions are answered with the stored response (Timer J).
//!
//! The implementation borrows [`rsipstack`] (pinned `=0.7.14`, the version interop-tested
//! with Kamailio) for exactly that. Messages cross the boundary as bytes, so replacing the
//! stack (e.g. by `ezk-sip-core`) touches only [`RsipStack`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rsipstack::sip::HostWithPort;
use rsipstack::transaction::key::{TransactionKey, TransactionRole};
use rsipstack::transaction::{Transaction, TransactionReceiver};
use rsipstack::transport::tcp_listener::TcpListenerConnection;
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::{SipAddr, TransportLayer};
use rsipstack::EndpointBuilder;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::message::{new_branch, SipMessage};

/// How a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// The Via token (`SIP/2.0/UDP`).
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// The URI `transport=` parameter value.
    pub fn param(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }

    fn rsip(self) -> rsipstack::sip::Transport {
        match self {
            Transport::Udp => rsipstack::sip::Transport::Udp,
            Transport::Tcp => rsipstack::sip::Transport::Tcp,
            Transport::Tls => rsipstack::sip::Transport::Tls,
        }
    }
}

/// Where a request goes: the next hop's socket address and transport (an explicit
/// outbound proxy or the server's address, as enterprise configurations give it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    pub transport: Transport,
}

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("SIP stack: cannot bind {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
    #[error("SIP stack: no {0:?} transport is configured")]
    NoTransport(Transport),
    #[error("SIP stack: message not accepted by the transport layer: {0}")]
    Encode(String),
    #[error("SIP stack: send failed: {0}")]
    Send(String),
    #[error("SIP stack: stopped")]
    Stopped,
}

/// An incoming request (a server transaction) waiting for its final response.
pub struct Incoming {
    pub request: SipMessage,
    responder: Box<dyn Responder>,
}

impl Incoming {
    pub fn new(request: SipMessage, responder: Box<dyn Responder>) -> Self {
        Incoming { request, responder }
    }

    /// Sends the final response. Retransmissions of the request are answered with it by
    /// the stack afterwards.
    pub async fn respond(self, response: SipMessage) -> Result<(), StackError> {
        self.responder.respond(response).await
    }
}

/// Answers one server transaction.
#[async_trait]
pub trait Responder: Send {
    async fn respond(self: Box<Self>, response: SipMessage) -> Result<(), StackError>;
}

/// The transport + transaction layer the SIP connector needs.
#[async_trait]
pub trait SipStack: Send + Sync + 'static {
    /// Sends `request` as a non-INVITE client transaction and returns its final response
    /// (provisionals are skipped). The stack writes the top Via (transport, our address,
    /// a fresh branch, `rport`); everything else is the caller's. A timeout (Timer F) comes
    /// back as a 408 response, a broken stream as a 503, like RFC 3261 §8.1.3.1 says.
    async fn request(&self, request: SipMessage, target: Target)
        -> Result<SipMessage, StackError>;

    /// Our address for `transport` (for Contact headers), if that transport is open.
    fn local_addr(&self, transport: Transport) -> Option<SocketAddr>;
}

/// Options for [`RsipStack::start`].
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Address for the UDP socket and the TCP listener (one port for both).
    pub bind: SocketAddr,
    /// Address to advertise in Via/Contact when `bind` is a wildcard or behind NAT.
    pub advertise: Option<SocketAddr>,
    pub udp: bool,
    pub tcp: bool,
    /// RFC 3261 T1 (500 ms by default); Timer F is 64×T1.
    pub t1: Duration,
    /// PEM root certificates for TLS servers (system roots are not loaded: enterprise SIP
    /// servers use private CAs, so the operator names the CA).
    pub tls_ca_pem: Option<Vec<u8>>,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            bind: "127.0.0.1:0".parse().expect("literal"),
            advertise: None,
            udp: true,
            tcp: true,
            t1: Duration::from_millis(500),
            tls_ca_pem: None,
        }
    }
}

/// [`SipStack`] on rsipstack 0.7.14.
pub struct RsipStack {
    endpoint: Arc<rsipstack::transaction::endpoint::Endpoint>,
    udp_addr: Option<SocketAddr>,
    tcp_addr: Option<SocketAddr>,
    cancel: CancellationToken,
}

impl RsipStack {
    /// Binds the transports and starts the endpoint. Incoming requests arrive on the
    /// returned channel; the stack stops when `cancel` fires (or on drop).
    pub async fn start(
        options: StackOptions,
        cancel: CancellationToken,
    ) -> Result<(Arc<RsipStack>, mpsc::Receiver<Incoming>), StackError> {
        let layer = TransportLayer::new(cancel.clone());
        let bind_err = |addr: SocketAddr, e: &dyn std::fmt::Display| StackError::Bind {
            addr,
            reason: e.to_string(),
        };
        let mut udp_addr = None;
        let mut tcp_addr = None;
        let mut bind = options.bind;
        if options.udp {
            let udp = UdpConnection::create_connection(
                bind,
                options.advertise,
                Some(cancel.child_token()),
            )
            .await
            .map_err(|e| bind_err(bind, &e))?;
            let local: SocketAddr = udp
                .get_addr()
                .addr
                .clone()
                .try_into()
                .map_err(|e: rsipstack::sip::Error| bind_err(bind, &e))?;
            // TCP takes the same port as UDP (a port-0 bind picks it once).
            bind.set_port(local.port());
            udp_addr = Some(options.advertise.unwrap_or(local));
            layer.add_transport(udp.into());
        }
        if options.tcp {
            // Bind here so a taken port is reported now, not inside the serve loop.
            let probe = std::net::TcpListener::bind(bind).map_err(|e| bind_err(bind, &e))?;
            let local = probe.local_addr().map_err(|e| bind_err(bind, &e))?;
            drop(probe);
            let tcp = TcpListenerConnection::new(local, options.advertise)
                .await
                .map_err(|e| bind_err(local, &e))?;
            tcp_addr = Some(options.advertise.unwrap_or(local));
            layer.add_transport(tcp.into());
        }
        if let Some(ca) = options.tls_ca_pem {
            layer.set_tls_config(rsipstack::transport::tls::TlsConfig {
                ca_certs: Some(ca),
                ..Default::default()
            });
        }
        let mut option = rsipstack::transaction::endpoint::EndpointOption::default();
        option.t1 = options.t1;
        option.t1x64 = options.t1 * 64;
        let endpoint = EndpointBuilder::new()
            .with_transport_layer(layer)
            .with_cancel_token(cancel.clone())
            .with_user_agent(concat!("presence-bridge/", env!("CARGO_PKG_VERSION")))
            .with_option(option)
            .build();
        let endpoint = Arc::new(endpoint);
        let incoming = endpoint
            .incoming_transactions()
            .map_err(|e| StackError::Send(e.to_string()))?;
        let serve = endpoint.clone();
        tokio::spawn(async move { serve.serve().await });
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(forward_incoming(incoming, tx, cancel.clone()));
        Ok((
            Arc::new(RsipStack {
                endpoint,
                udp_addr,
                tcp_addr,
                cancel,
            }),
            rx,
        ))
    }
}

impl Drop for RsipStack {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Converts rsipstack server transactions to [`Incoming`]. A request the stack parsed but
/// we cannot is answered 400 here, so the peer gets a clean answer instead of a timeout.
async fn forward_incoming(
    mut incoming: TransactionReceiver,
    tx: mpsc::Sender<Incoming>,
    cancel: CancellationToken,
) {
    loop {
        let transaction = tokio::select! {
            t = incoming.recv() => match t { Some(t) => t, None => return },
            _ = cancel.cancelled() => return,
        };
        let text = transaction.original.to_string();
        match SipMessage::parse(text.as_bytes()) {
            Ok(request) => {
                let responder = Box::new(RsipResponder { transaction });
                if tx.send(Incoming::new(request, responder)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "incoming SIP request rejected by our parser");
                let mut transaction = transaction;
                let _ = transaction
                    .reply(rsipstack::sip::StatusCode::BadRequest)
                    .await;
            }
        }
    }
}

struct RsipResponder {
    transaction: Transaction,
}

#[async_trait]
impl Responder for RsipResponder {
    async fn respond(mut self: Box<Self>, response: SipMessage) -> Result<(), StackError> {
        let bytes = response.to_bytes();
        let response = rsipstack::sip::Response::try_from(bytes.as_slice())
            .map_err(|e| StackError::Encode(e.to_string()))?;
        self.transaction
            .respond(response)
            .await
            .map_err(|e| StackError::Send(e.to_string()))
    }
}

#[async_trait]
impl SipStack for RsipStack {
    async fn request(
        &self,
        mut request: SipMessage,
        target: Target,
    ) -> Result<SipMessage, StackError> {
        if self.cancel.is_cancelled() {
            return Err(StackError::Stopped);
        }
        let local = self
            .local_addr(target.transport)
            .ok_or(StackError::NoTransport(target.transport))?;
        request.remove("Via");
        request.headers.insert(
            0,
            (
                "Via".to_string(),
                format!(
                    "SIP/2.0/{} {};branch={};rport",
                    target.transport.via_token(),
                    local,
                    new_branch()
                ),
            ),
        );
        let bytes = request.to_bytes();
        let rsip_request = rsipstack::sip::Request::try_from(bytes.as_slice())
            .map_err(|e| StackError::Encode(e.to_string()))?;
        let key = TransactionKey::from_request(&rsip_request, TransactionRole::Client)
            .map_err(|e| StackError::Encode(e.to_string()))?;
        let mut transaction =
            Transaction::new_client(key, rsip_request, self.endpoint.inner.clone(), None);
        transaction.destination = Some(SipAddr {
            r#type: Some(target.transport.rsip()),
            addr: HostWithPort::from(target.addr),
        });
        transaction
            .send()
            .await
            .map_err(|e| StackError::Send(e.to_string()))?;
        // `receive` must be driven to completion by its owner (dropping it mid-way loses a
        // response); the transaction itself ends with a final response or Timer F's 408.
        while let Some(message) = transaction.receive().await {
            if let rsipstack::sip::SipMessage::Response(response) = message {
                if response.status_code.code() < 200 {
                    continue;
                }
                let text = response.to_string();
                return SipMessage::parse(text.as_bytes())
                    .map_err(|e| StackError::Send(format!("unparsable response: {e}")));
            }
        }
        Err(StackError::Stopped)
    }

    fn local_addr(&self, transport: Transport) -> Option<SocketAddr> {
        match transport {
            Transport::Udp => self.udp_addr,
            // TLS client connections are outgoing only; NOTIFYs come back on them.
            Transport::Tcp | Transport::Tls => self.tcp_addr.or(self.udp_addr),
        }
    }
}
