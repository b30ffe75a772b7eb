//! Images for other platforms, travelling by the tree.
//!
//! A context starts children of its own platform from its own in-memory
//! image. For another platform it needs that platform's image: it asks its
//! parent (GET_MODULE), which answers from its cache or asks its own
//! parent, up to the master, which holds the images registered with
//! [`crate::RouterBuilder::image_for`]. The answer (LOAD_MODULE) is cached
//! at every hop, so each image crosses each stream at most once. A parent
//! can also push an image down ahead of need (FORWARD_MODULE,
//! [`crate::Context::forward_image`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use spore_proto::messages::{ImageReply, ImageRequest};
use spore_proto::{ContextId, Frame, Header, handles};
use tokio::sync::watch;

use crate::bootstrap::Image;
use crate::router::Inner;
use crate::{ConnectError, Context};

/// An image as it is cached and sent: zstd-compressed, or why it cannot be had.
type Fetched = Result<Bytes, String>;

/// One context's images of other platforms.
#[derive(Default)]
pub(crate) struct ImageStore {
    /// Per platform: the cached image (`Some(Ok)`), or a fetch in flight
    /// (`None`) that every asker waits on. Failures are not kept.
    slots: Mutex<HashMap<String, watch::Sender<Option<Fetched>>>>,
    /// (context, platform) pairs this context pushed down: never twice.
    forwarded: Mutex<HashSet<(ContextId, String)>>,
}

/// This machine's platform, `<os>-<arch>`, e.g. `linux-x86_64`: the form
/// the first stage reports and [`crate::RouterBuilder::image_for`] takes.
pub fn this_platform() -> String {
    let u = rustix::system::uname();
    platform_of(
        &u.sysname().to_string_lossy(),
        &u.machine().to_string_lossy(),
    )
}

/// The platform key for what `uname -s` and `uname -m` print.
pub(crate) fn platform_of(os: &str, arch: &str) -> String {
    format!("{}-{arch}", os.to_ascii_lowercase())
}

/// The platform key for a platform (`linux-aarch64`, kept as it is) or a
/// Rust target triple (`aarch64-unknown-linux-musl` → `linux-aarch64`),
/// with the triple's architecture spelt as `uname -m` spells it.
pub(crate) fn platform_key(platform_or_triple: &str) -> String {
    let parts: Vec<&str> = platform_or_triple.split('-').collect();
    if parts.len() < 3 {
        return platform_or_triple.to_ascii_lowercase();
    }
    // ARCH-VENDOR-OS[-ENV]; a few triples drop the vendor (x86_64-linux-gnu).
    let os = if parts[1] == "linux" {
        parts[1]
    } else {
        parts[2]
    };
    let arch = match parts[0] {
        "i586" | "i686" => "i686",
        "armv7" => "armv7l",
        "arm" => "armv6l",
        a if a.starts_with("riscv64") => "riscv64",
        a => a,
    };
    platform_of(os, arch)
}

impl Inner {
    /// The compressed image for `platform`: from this context's cache, else
    /// (in the master) from the registered images, else from the parent.
    /// Concurrent askers share one fetch.
    pub(crate) async fn platform_image(self: &Arc<Self>, platform: &str) -> Fetched {
        let (mut rx, fetch) = {
            let mut slots = self.images.slots.lock().unwrap();
            match slots.get(platform) {
                Some(slot) => (slot.subscribe(), false),
                None => {
                    let (tx, rx) = watch::channel(None);
                    slots.insert(platform.to_owned(), tx);
                    (rx, true)
                }
            }
        };
        if fetch {
            if self.is_master() {
                let (inner, key) = (self.clone(), platform.to_owned());
                let loaded = self
                    .rt
                    .spawn_blocking(move || inner.registered_image(&key))
                    .await
                    .unwrap_or_else(|e| Err(format!("loading the image failed: {e}")));
                self.image_arrived(platform, loaded);
            } else {
                self.ask_parent_for(platform);
            }
        }
        let waited =
            tokio::time::timeout(self.settings.connect_timeout, rx.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(got)) => got.clone().expect("waited for Some"),
            Ok(Err(_)) => Err(format!("{}: the image fetch was dropped", self.name)),
            Err(_) => {
                self.images.slots.lock().unwrap().remove(platform);
                Err(format!(
                    "{}: no image for {platform} from the parent within {:?}",
                    self.name, self.settings.connect_timeout
                ))
            }
        }
    }

    /// In the master: the image registered for `platform`, or this
    /// program's own image for this machine's platform.
    fn registered_image(&self, platform: &str) -> Fetched {
        let path = match self.settings.images.get(platform) {
            Some(path) => Some(path.as_path()),
            None if platform == this_platform() => self.settings.image.as_deref(),
            None => {
                let mut known: Vec<&str> =
                    self.settings.images.keys().map(String::as_str).collect();
                known.sort_unstable();
                let triple = match platform.split_once('-') {
                    Some((os, arch)) => format!("{arch}-unknown-{os}-musl"),
                    None => "ARCH-unknown-OS-musl".to_owned(),
                };
                return Err(format!(
                    "no image for platform {platform} in {}: build this program for it \
                     (e.g. `cargo build --release --target {triple}`) and register it with \
                     RouterBuilder::image_for(\"{triple}\", PATH) (registered: {})",
                    self.name,
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ));
            }
        };
        Image::load(path)?.compressed()
    }

    fn ask_parent_for(self: &Arc<Self>, platform: &str) {
        let parent = *self.parent_ids.first().expect("a child has a parent");
        let request = ImageRequest {
            platform: platform.to_owned(),
        };
        let payload = postcard::to_stdvec(&request).expect("an ImageRequest serializes");
        if let Err(e) = self.send(Frame::new(
            Header::new(parent, self.my_id, handles::GET_MODULE),
            payload,
        )) {
            self.image_arrived(platform, Err(e));
        }
    }

    /// Stores an image (or a failure, which wakes the askers and is forgotten).
    fn image_arrived(&self, platform: &str, image: Fetched) {
        let mut slots = self.images.slots.lock().unwrap();
        let failed = image.is_err();
        match slots.get(platform) {
            Some(slot) => {
                slot.send_replace(Some(image));
            }
            None if !failed => {
                slots.insert(platform.to_owned(), watch::channel(Some(image)).0);
            }
            None => {}
        }
        if failed {
            slots.remove(platform);
        }
    }

    /// Registers GET_MODULE, LOAD_MODULE and FORWARD_MODULE.
    pub(crate) fn add_image_handlers(&self) {
        self.add_internal(handles::GET_MODULE, |inner, f| inner.on_get_module(f));
        self.add_internal(handles::LOAD_MODULE, |inner, f| {
            inner.on_image(f, "LOAD_MODULE")
        });
        self.add_internal(handles::FORWARD_MODULE, |inner, f| {
            inner.on_image(f, "FORWARD_MODULE")
        });
    }

    /// GET_MODULE from a context below: answer it to its LOAD_MODULE handle.
    fn on_get_module(self: &Arc<Self>, frame: Frame) {
        let src = frame.header.src;
        if !self.is_below(src) {
            let reason = format!(
                "{} refused GET_MODULE from context {src}, which is not below it",
                self.name
            );
            tracing::warn!("{reason}");
            return self.refuse(&frame.header, &reason);
        }
        let request: ImageRequest = match postcard::from_bytes(&frame.payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("undecodable GET_MODULE from context {src}: {e}");
                return;
            }
        };
        let inner = self.clone();
        self.rt.spawn(async move {
            let image = inner.platform_image(&request.platform).await;
            let platform = request.platform;
            if let Err(e) = inner.send_image(src, handles::LOAD_MODULE, &platform, image) {
                // Too large, say: the asker must not wait for nothing.
                let why = format!("{} cannot send the image for {platform}: {e}", inner.name);
                let _ = inner.send_image(src, handles::LOAD_MODULE, &platform, Err(why));
            }
        });
    }

    fn send_image(
        self: &Arc<Self>,
        to: ContextId,
        handle: u32,
        platform: &str,
        image: Fetched,
    ) -> Result<(), String> {
        let reply = ImageReply {
            platform: platform.to_owned(),
            image: image.map(|b| serde_bytes::ByteBuf::from(b.to_vec())),
        };
        let payload = crate::call::encode_after(&[], &reply).map_err(|e| e.to_string())?;
        self.send(Frame::new(Header::new(to, self.my_id, handle), payload))
    }

    /// LOAD_MODULE or FORWARD_MODULE: only an ancestor may hand this
    /// context an image (it would run it in its children).
    fn on_image(self: &Arc<Self>, frame: Frame, what: &str) {
        let src = frame.header.src;
        if !self.parent_ids.contains(&src) {
            let reason = format!(
                "{} refused {what} from context {src}, which is not one of its parents",
                self.name
            );
            tracing::warn!("{reason}");
            return self.refuse(&frame.header, &reason);
        }
        match postcard::from_bytes::<ImageReply>(&frame.payload) {
            Ok(reply) => {
                let image = reply.image.map(|b| Bytes::from(b.into_vec()));
                self.image_arrived(&reply.platform, image);
            }
            Err(e) => tracing::warn!("undecodable {what} from context {src}: {e}"),
        }
    }
}

impl Context {
    /// Pushes the image for `platform` (see
    /// [`crate::RouterBuilder::image_for`]) down to this context ahead of
    /// need (FORWARD_MODULE), so that contexts it starts for that platform
    /// need no round trip. The same image is never sent to the same context
    /// twice.
    pub async fn forward_image(&self, platform: &str) -> Result<(), ConnectError> {
        let key = (self.id, platform.to_owned());
        if self.inner.images.forwarded.lock().unwrap().contains(&key) {
            return Ok(());
        }
        let image = self
            .inner
            .platform_image(platform)
            .await
            .map_err(|detail| ConnectError::Image {
                context: self.name().to_owned(),
                detail,
            })?;
        if !self
            .inner
            .images
            .forwarded
            .lock()
            .unwrap()
            .insert(key.clone())
        {
            return Ok(());
        }
        let sent = self
            .inner
            .send_image(self.id, handles::FORWARD_MODULE, platform, Ok(image));
        sent.map_err(|detail| {
            self.inner.images.forwarded.lock().unwrap().remove(&key);
            ConnectError::Image {
                context: self.name().to_owned(),
                detail,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_triples_become_the_platform_the_first_stage_reports() {
        for (given, key) in [
            ("aarch64-unknown-linux-musl", "linux-aarch64"),
            ("x86_64-unknown-linux-gnu", "linux-x86_64"),
            ("x86_64-linux-gnu", "linux-x86_64"),
            ("armv7-unknown-linux-musleabihf", "linux-armv7l"),
            ("riscv64gc-unknown-linux-gnu", "linux-riscv64"),
            ("i686-unknown-linux-musl", "linux-i686"),
            ("linux-aarch64", "linux-aarch64"),
            ("Linux-x86_64", "linux-x86_64"),
        ] {
            assert_eq!(platform_key(given), key, "{given}");
        }
        assert_eq!(platform_key(&this_platform()), this_platform());
    }
}
