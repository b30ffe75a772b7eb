//! Well-known handles. Names follow Mitogen's; numbers are spore's own.
//!
//! Handles below [`FIRST_DYNAMIC`] are reserved for the protocol; handles from
//! [`FIRST_DYNAMIC`] up are allocated at run time (reply handles, receivers).

/// Request a code image (for a target whose image differs from ours).
pub const GET_MODULE: u32 = 100;
/// Run a registered function; payload is [`crate::messages::CallRequest`] + arguments.
pub const CALL_FUNCTION: u32 = 101;
/// A log record or a captured stdout line travelling to the master.
pub const FORWARD_LOG: u32 = 102;
/// Announce a new descendant context.
pub const ADD_ROUTE: u32 = 103;
/// Announce a lost context.
pub const DEL_ROUTE: u32 = 104;
/// Ask the master for a block of context IDs.
pub const ALLOCATE_ID: u32 = 105;
/// Ask a context (and its children) to shut down.
pub const SHUTDOWN: u32 = 106;
/// Answer to GET_MODULE: a code image.
pub const LOAD_MODULE: u32 = 107;
/// Push a code image down ahead of need.
pub const FORWARD_MODULE: u32 = 108;
/// A context announces it is detaching from its parent.
pub const DETACHING: u32 = 109;
/// Call a method of a service.
pub const CALL_SERVICE: u32 = 110;
/// Service call relayed through a stub.
pub const STUB_CALL_SERVICE: u32 = 111;
/// Liveness ping between a parent and a direct child (empty payload).
pub const HEARTBEAT: u32 = 112;
/// The first frame a parent sends a new child: its [`crate::messages::ChildConfig`].
pub const CONFIGURE: u32 = 120;

/// The first handle reserved for services: libraries built on spore that
/// own a well-known handle in every context (the process layer is one).
pub const FIRST_SERVICE: u32 = 200;
/// The last handle reserved for services.
pub const LAST_SERVICE: u32 = 299;

/// `reply_to` value marking a dead message (its payload is a UTF-8 reason).
pub const IS_DEAD: u32 = 999;

/// First handle handed out at run time.
pub const FIRST_DYNAMIC: u32 = 1000;

/// The well-known handle's name, for logs and errors.
pub fn name(handle: u32) -> Option<&'static str> {
    Some(match handle {
        GET_MODULE => "GET_MODULE",
        CALL_FUNCTION => "CALL_FUNCTION",
        FORWARD_LOG => "FORWARD_LOG",
        ADD_ROUTE => "ADD_ROUTE",
        DEL_ROUTE => "DEL_ROUTE",
        ALLOCATE_ID => "ALLOCATE_ID",
        SHUTDOWN => "SHUTDOWN",
        LOAD_MODULE => "LOAD_MODULE",
        FORWARD_MODULE => "FORWARD_MODULE",
        DETACHING => "DETACHING",
        CALL_SERVICE => "CALL_SERVICE",
        STUB_CALL_SERVICE => "STUB_CALL_SERVICE",
        HEARTBEAT => "HEARTBEAT",
        CONFIGURE => "CONFIGURE",
        _ => return None,
    })
}
