//! The fixtures of the MCP conformance suite (`@modelcontextprotocol/conformance`): the
//! tools, resources and prompts its server scenarios call. Served only at
//! `/mcp/conformance`, and only when `mcp.conformance` is switched on; they touch no sandbox.
//!
//! One [`Hub`] is shared by every session of the endpoint (the `subscriptions/listen`
//! streams a tool call notifies, the key sealing `requestState`); the rest of a
//! [`Fixtures`] belongs to one session.

// Logging, sampling, roots and `resources/subscribe` are deprecated by the 2026-07-28
// revision, but the 2025-11-25 scenarios still exercise them.
#![allow(deprecated)]

mod client;
mod input;
mod prompts;
mod resources;
mod tools;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CompleteRequestParams, CompleteResult,
    GetPromptRequestParams, GetPromptResponse, Implementation, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, LoggingLevel,
    PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, RequestStateCodec,
    ServerCapabilities, ServerConfig, SetLevelRequestMethod, SetLevelRequestParams,
    SubscribeRequestParams, SubscriptionFilter, Tool, UnsubscribeRequestParams,
};
use rmcp::service::{RequestContext, SubscriptionContext, SubscriptionSendError, SubscriptionSink};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};

/// How long clients may cache the fixtures' lists and resources (they never change).
const CACHE_TTL_MS: u64 = 60_000;

/// State shared by every session of the conformance endpoint.
#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

#[derive(Debug)]
struct HubInner {
    /// Open `subscriptions/listen` streams, by a key of our own.
    listeners: Mutex<HashMap<u64, SubscriptionSink>>,
    next_listener: AtomicU64,
    /// Seals the `requestState` of input-required results; a fresh key per process.
    request_state: RequestStateCodec,
}

impl Hub {
    /// A hub with no listeners and a new random sealing key.
    pub fn new() -> Self {
        let key: [u8; 32] = rand::random();
        Self {
            inner: Arc::new(HubInner {
                listeners: Mutex::new(HashMap::new()),
                next_listener: AtomicU64::new(0),
                request_state: RequestStateCodec::try_new(key.to_vec())
                    .expect("a 32-byte key has the minimum length"),
            }),
        }
    }

    fn codec(&self) -> &RequestStateCodec {
        &self.inner.request_state
    }

    /// Sends a change notification to every open listener; a listener whose filter
    /// leaves it out refuses it (that is the point of the filter), a closed one is
    /// forgotten.
    async fn notify_listeners(&self, change: ListChange) {
        let listeners: Vec<(u64, SubscriptionSink)> = self
            .inner
            .listeners
            .lock()
            .expect("listener map lock poisoned")
            .iter()
            .map(|(key, sink)| (*key, sink.clone()))
            .collect();
        for (key, sink) in listeners {
            let sent = match change {
                ListChange::Tools => sink.notify_tool_list_changed().await,
                ListChange::Prompts => sink.notify_prompt_list_changed().await,
            };
            if let Err(SubscriptionSendError::SubscriptionClosed) = sent {
                self.remove_listener(key);
            }
        }
    }

    fn add_listener(&self, sink: SubscriptionSink) -> u64 {
        let key = self.inner.next_listener.fetch_add(1, Ordering::Relaxed);
        self.inner
            .listeners
            .lock()
            .expect("listener map lock poisoned")
            .insert(key, sink);
        key
    }

    fn remove_listener(&self, key: u64) {
        self.inner
            .listeners
            .lock()
            .expect("listener map lock poisoned")
            .remove(&key);
    }
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

/// The conformance fixture server of one session.
#[derive(Debug, Clone)]
pub struct Fixtures {
    hub: Hub,
    /// The level set by `logging/setLevel` (sessions of protocols before 2026-07-28).
    log_level: Arc<Mutex<Option<LoggingLevel>>>,
    /// The URIs subscribed with `resources/subscribe`.
    subscribed: Arc<Mutex<BTreeSet<String>>>,
}

impl Fixtures {
    /// A fresh fixture session sharing `hub` with the endpoint's other sessions.
    pub fn new(hub: &Hub) -> Self {
        Self {
            hub: hub.clone(),
            log_level: Arc::new(Mutex::new(None)),
            subscribed: Arc::new(Mutex::new(BTreeSet::new())),
        }
    }

    /// The least severe level a log message of this request may have to be sent, or
    /// `None` when it must send none: a 2026-07-28 request asks for messages in its
    /// `_meta`, an older session with `logging/setLevel` (everything from `info` until
    /// it does).
    fn log_threshold(&self, context: &RequestContext<RoleServer>) -> Option<LoggingLevel> {
        if let Some(level) = context.meta.log_level() {
            return Some(level);
        }
        if !is_legacy(context) {
            return None;
        }
        let level = *self.log_level.lock().expect("log level lock poisoned");
        Some(level.unwrap_or(LoggingLevel::Info))
    }
}

/// A list whose change [`Hub::notify_listeners`] announces.
#[derive(Debug, Clone, Copy)]
enum ListChange {
    Tools,
    Prompts,
}

/// Whether this request belongs to a session opened with `initialize` (protocols up to
/// 2025-11-25) rather than to the stateless 2026-07-28 protocol.
fn is_legacy(context: &RequestContext<RoleServer>) -> bool {
    context
        .protocol_version()
        .is_none_or(|version| version.has_initialize())
}

/// Numeric severity of a log level, `debug` lowest.
fn severity(level: LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

impl ServerHandler for Fixtures {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_logging()
            .enable_completions()
            .enable_prompts()
            .enable_prompts_list_changed()
            .enable_resources()
            .enable_resources_subscribe()
            .enable_resources_list_changed()
            .enable_tools()
            .enable_tool_list_changed()
            .build();
        let mut info = ServerConfig::new(capabilities);
        info.server_info = Implementation::new("nexus-conformance", env!("CARGO_PKG_VERSION"));
        info.instructions =
            Some("Fixtures of the MCP conformance suite; they touch no sandbox.".into());
        info
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        if !is_legacy(&context) {
            // Removed in 2026-07-28: a request carries its level in `_meta`.
            return Err(McpError::method_not_found::<SetLevelRequestMethod>());
        }
        *self.log_level.lock().expect("log level lock poisoned") = Some(request.level);
        Ok(())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(tools::catalog()).with_ttl_ms(CACHE_TTL_MS))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools::catalog().into_iter().find(|tool| tool.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        if input::handles(&request.name) {
            return input::call(self.hub.codec(), request, &context);
        }
        tools::call(self, request, context).await
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        Ok(resources::list().with_ttl_ms(CACHE_TTL_MS))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(resources::templates().with_ttl_ms(CACHE_TTL_MS))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let result = resources::read(&request.uri)?;
        Ok(result.with_ttl_ms(CACHE_TTL_MS).into())
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.subscribed
            .lock()
            .expect("subscription lock poisoned")
            .insert(request.uri);
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.subscribed
            .lock()
            .expect("subscription lock poisoned")
            .remove(&request.uri);
        Ok(())
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.supported_by(&self.get_info().capabilities))
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        let key = self.hub.add_listener(context.sink().clone());
        context.cancelled().await;
        self.hub.remove_listener(key);
        Ok(())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        Ok(ListPromptsResult::with_all_items(prompts::catalog()).with_ttl_ms(CACHE_TTL_MS))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        prompts::get(request)
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, McpError> {
        prompts::complete(&request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_rise_from_debug_to_emergency() {
        let levels = [
            LoggingLevel::Debug,
            LoggingLevel::Info,
            LoggingLevel::Notice,
            LoggingLevel::Warning,
            LoggingLevel::Error,
            LoggingLevel::Critical,
            LoggingLevel::Alert,
            LoggingLevel::Emergency,
        ];
        for pair in levels.windows(2) {
            assert!(severity(pair[0]) < severity(pair[1]));
        }
    }

    #[test]
    fn capabilities_cover_every_fixture_kind() {
        let caps = Fixtures::new(&Hub::new()).get_info().capabilities;
        assert!(caps.tools.is_some());
        assert!(caps.prompts.is_some());
        assert!(caps.completions.is_some());
        assert!(caps.logging.is_some());
        let resources = caps.resources.expect("resources capability");
        assert_eq!(resources.subscribe, Some(true));
    }
}
