//! A real authoritative DNS server on loopback (hickory-server) serving the
//! records a test gives it, from one zone at the root. Queries for other
//! names get NXDOMAIN. Stopped when dropped, or on demand mid-test.

use hickory_server::{
    proto::rr::{
        rdata::{A, PTR, SOA, TXT},
        LowerName, Name, RData, Record,
    },
    store::in_memory::InMemoryZoneHandler,
    zone_handler::{AxfrPolicy, Catalog, ZoneType},
    Server,
};
use std::{net::SocketAddr, str::FromStr, sync::Arc, time::Duration};
use tokio::net::{TcpListener, UdpSocket};

pub enum Rec {
    Txt(&'static str, String),
    A(&'static str, [u8; 4]),
    Ptr(&'static str, &'static str),
}

pub struct DnsServer {
    pub addr: SocketAddr,
    server: Option<Server<Catalog>>,
}

fn name(s: &str) -> Name {
    let fq = if s.ends_with('.') {
        s.to_string()
    } else {
        format!("{s}.")
    };
    Name::from_str(&fq).expect("test record name")
}

impl DnsServer {
    pub async fn start(records: Vec<Rec>) -> DnsServer {
        let root = Name::root();
        let mut zone =
            InMemoryZoneHandler::<hickory_server::net::runtime::TokioRuntimeProvider>::empty(
                root.clone(),
                ZoneType::Primary,
                AxfrPolicy::Deny,
            );
        let soa = SOA::new(name("ns.test"), name("admin.test"), 1, 3600, 600, 86400, 60);
        zone.upsert_mut(Record::from_rdata(root.clone(), 3600, RData::SOA(soa)), 0);
        for r in records {
            let record = match r {
                Rec::Txt(n, text) => {
                    // TXT strings hold 255 bytes: split longer ones.
                    let parts: Vec<String> = text
                        .as_bytes()
                        .chunks(255)
                        .map(|c| String::from_utf8_lossy(c).into_owned())
                        .collect();
                    Record::from_rdata(name(n), 300, RData::TXT(TXT::new(parts)))
                }
                Rec::A(n, ip) => Record::from_rdata(
                    name(n),
                    300,
                    RData::A(A::from(std::net::Ipv4Addr::from(ip))),
                ),
                Rec::Ptr(n, target) => {
                    Record::from_rdata(name(n), 300, RData::PTR(PTR(name(target))))
                }
            };
            zone.upsert_mut(record, 0);
        }
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&root), vec![Arc::new(zone)]);
        let (udp, tcp, addr) = udp_and_tcp().await;
        let mut server = Server::new(catalog);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 65535);
        DnsServer {
            addr,
            server: Some(server),
        }
    }

    /// Stops answering (the port then refuses or times out).
    pub async fn stop(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), s.shutdown_gracefully()).await;
        }
    }
}

/// A loopback UDP socket and a TCP listener on the same port, as a DNS
/// server needs, on a port [`super::free_port_where`] hands out.
pub async fn udp_and_tcp() -> (UdpSocket, TcpListener, SocketAddr) {
    let port = super::free_port_where(|port| {
        std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
    });
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let udp = UdpSocket::bind(addr).await.expect("bind dns udp");
    let tcp = TcpListener::bind(addr).await.expect("bind dns tcp");
    (udp, tcp, addr)
}
