//! Answers DNS queries from the current [`Zone`]: authoritative answers for the cluster domain,
//! REFUSED for every other name, NOTIMP for anything but a query.

use std::sync::Arc;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::Record;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::sync::watch;

use super::zone::{Answer, Zone};

/// The EDNS version this server speaks.
const EDNS_VERSION: u8 = 0;

/// Serves queries from the latest zone the feed published.
pub struct ZoneHandler {
    zone: watch::Receiver<Arc<Zone>>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl ZoneHandler {
    /// A handler that always answers from the newest value of `zone`, counted in `metrics`.
    pub fn new(zone: watch::Receiver<Arc<Zone>>, metrics: Arc<crate::metrics::Metrics>) -> Self {
        ZoneHandler { zone, metrics }
    }
}

/// A response code as a label value (a closed set).
fn rcode_label(code: &ResponseCode) -> &'static str {
    match code {
        ResponseCode::NoError => "NoError",
        ResponseCode::NXDomain => "NXDomain",
        ResponseCode::Refused => "Refused",
        ResponseCode::NotImp => "NotImp",
        ResponseCode::FormErr => "FormErr",
        ResponseCode::ServFail => "ServFail",
        ResponseCode::BADVERS => "BADVERS",
        _ => "other",
    }
}

/// The EDNS section of the response, when the request had one: same payload size (at least
/// 512), our version.
fn response_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|asked| {
        let mut edns = Edns::new();
        edns.set_max_payload(asked.max_payload().max(512));
        edns.set_version(EDNS_VERSION);
        edns
    })
}

#[async_trait::async_trait]
impl RequestHandler for ZoneHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let edns = response_edns(request);
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = false;

        let zone = self.zone.borrow().clone();
        let empty: &[Record] = &[];
        let (answers, soa, additionals) =
            if request.metadata.message_type != MessageType::Query || request.metadata.op_code != OpCode::Query {
                metadata.response_code = ResponseCode::NotImp;
                (Vec::new(), empty, Vec::new())
            } else if request.edns.as_ref().is_some_and(|e| e.version() > EDNS_VERSION) {
                metadata.response_code = ResponseCode::BADVERS;
                (Vec::new(), empty, Vec::new())
            } else {
                match request.request_info() {
                    Err(_) => {
                        metadata.response_code = ResponseCode::FormErr;
                        (Vec::new(), empty, Vec::new())
                    }
                    Ok(info) => match zone.lookup(info.query.name(), info.query.query_type()) {
                        Answer::Records { answers, additionals } => {
                            metadata.authoritative = true;
                            (answers, empty, additionals)
                        }
                        Answer::NoData => {
                            metadata.authoritative = true;
                            (Vec::new(), std::slice::from_ref(zone.soa()), Vec::new())
                        }
                        Answer::NxDomain => {
                            metadata.authoritative = true;
                            metadata.response_code = ResponseCode::NXDomain;
                            (Vec::new(), std::slice::from_ref(zone.soa()), Vec::new())
                        }
                        Answer::Refused => {
                            metadata.response_code = ResponseCode::Refused;
                            (Vec::new(), empty, Vec::new())
                        }
                    },
                }
            };
        let label = crate::metrics::DnsLabels { rcode: rcode_label(&metadata.response_code) };
        self.metrics.dns_queries.get_or_create(&label).inc();
        let message = builder.build(metadata, answers, empty, soa, additionals);
        match response.send_response(message).await {
            Ok(info) => info,
            Err(e) => {
                tracing::warn!("dns: sending a response failed: {e}");
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header { metadata, counts: HeaderCounts::default() })
            }
        }
    }
}
