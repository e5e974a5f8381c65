//! `sendPhoto`, `sendDocument`, `sendAudio` and `sendVoice`: where the file
//! comes from (an upload, `attach://<part>`, or a `file_id` the fake issued),
//! Telegram's upload rules, and the PhotoSize/Document/Audio/Voice objects of
//! the returned Message.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::{
    Fail, Outgoing, Params, SentMedia, State, bad, bool_param, int_param, render_caption,
    reply_target, str_param, too_large, validate_reply_markup,
};

/// Telegram's size limit for photos ("at most 10 MB").
const MAX_PHOTO_BYTES: usize = 10 << 20;
/// Telegram's size limit for other uploads ("up to 50 MB").
const MAX_UPLOAD_BYTES: usize = 50 << 20;
/// "The photo's width and height must not exceed 10000 in total."
const MAX_PHOTO_SIDES_SUM: u64 = 10_000;
/// "Width and height ratio must be at most 20."
const MAX_PHOTO_RATIO: u64 = 20;
/// Longest side of the biggest PhotoSize Telegram keeps.
const MAX_PHOTO_SIDE: u32 = 2560;
/// Longest side of the small thumbnail PhotoSize Telegram adds.
const THUMBNAIL_SIDE: u32 = 90;

/// Uploaded multipart parts (those with a `filename`), by part name.
pub(crate) type Uploads = HashMap<String, Upload>;

pub(crate) struct Upload {
    file_name: String,
    data: Vec<u8>,
}

impl Upload {
    pub(crate) fn new(file_name: String, data: Vec<u8>) -> Upload {
        Upload { file_name, data }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MediaKind {
    Photo,
    Document,
    Audio,
    Voice,
}

impl MediaKind {
    pub(crate) fn from_method(method: &str) -> Option<MediaKind> {
        match method {
            "sendphoto" => Some(MediaKind::Photo),
            "senddocument" => Some(MediaKind::Document),
            "sendaudio" => Some(MediaKind::Audio),
            "sendvoice" => Some(MediaKind::Voice),
            _ => None,
        }
    }

    /// The method's file parameter, the Message field, and [`SentMedia::kind`].
    fn field(self) -> &'static str {
        match self {
            MediaKind::Photo => "photo",
            MediaKind::Document => "document",
            MediaKind::Audio => "audio",
            MediaKind::Voice => "voice",
        }
    }

    /// tdlib's name for the file type, as in Telegram's errors.
    fn td_name(self) -> &'static str {
        match self {
            MediaKind::Photo => "Photo",
            MediaKind::Document => "Document",
            MediaKind::Audio => "Audio",
            MediaKind::Voice => "VoiceNote",
        }
    }

    /// How real `file_id`s of this kind start.
    fn id_prefix(self) -> &'static str {
        match self {
            MediaKind::Photo => "AgAC",
            MediaKind::Document => "BQAC",
            MediaKind::Audio => "CQAC",
            MediaKind::Voice => "AwAC",
        }
    }
}

/// A file the fake issued a `file_id` for.
#[derive(Clone)]
pub(crate) struct StoredFile {
    kind: MediaKind,
    media: SentMedia,
    /// The value of the Message field (an array of PhotoSize for photos).
    json: Value,
}

enum Source<'a> {
    Upload(&'a Upload),
    /// A `file_id` or a URL.
    Remote(String),
}

/// Validates a media send; the file gets its `file_id`s here, and they are
/// registered if the message is sent.
pub(crate) fn prepare(
    st: &mut State,
    chat_id: i64,
    kind: MediaKind,
    p: &Params,
    uploads: &Uploads,
) -> Result<Outgoing, Fail> {
    let source = input_file(p, uploads, kind)?;
    if let Source::Upload(upload) = source {
        // Telegram refuses these before reading anything else.
        let limit = match kind {
            MediaKind::Photo => MAX_PHOTO_BYTES,
            _ => MAX_UPLOAD_BYTES,
        };
        if upload.data.len() > limit {
            return Err(too_large());
        }
    }
    let caption = render_caption(p)?;
    let markup = validate_reply_markup(p.get("reply_markup"), false)?;
    let reply_to = reply_target(st, chat_id, p)?;
    let (file, new_files) = match source {
        Source::Remote(id) => (known_file(st, &id, kind)?, Vec::new()),
        Source::Upload(upload) => {
            let file = upload_file(st, kind, upload, p)?;
            let ids = file_ids(&file.json);
            let new_files = ids.into_iter().map(|id| (id, file.clone())).collect();
            (file, new_files)
        }
    };
    let mut content = Map::new();
    content.insert(kind.field().to_owned(), file.json);
    let entities = caption.entities_json();
    if !caption.text.is_empty() {
        content.insert("caption".to_owned(), json!(caption.text));
    }
    if !entities.is_empty() {
        content.insert("caption_entities".to_owned(), json!(entities));
    }
    if kind == MediaKind::Photo {
        if bool_param(p, "show_caption_above_media") {
            content.insert("show_caption_above_media".to_owned(), json!(true));
        }
        if bool_param(p, "has_spoiler") {
            content.insert("has_media_spoiler".to_owned(), json!(true));
        }
    }
    Ok(Outgoing {
        chat_id,
        content,
        text: caption.text,
        entities,
        raw_text: str_param(p, "caption").unwrap_or_default(),
        markup,
        reply_to,
        link_preview_disabled: false,
        media: Some(file.media),
        new_files,
    })
}

/// Like Telegram: a string value is a `file_id`, a URL, or `attach://<name>`
/// naming an uploaded part; otherwise the file must be uploaded under the
/// parameter's own name.
fn input_file<'a>(p: &Params, uploads: &'a Uploads, kind: MediaKind) -> Result<Source<'a>, Fail> {
    let field = kind.field();
    let missing = || bad(format!("there is no {field} in the request"));
    match str_param(p, field).filter(|s| !s.is_empty()) {
        Some(value) => match value.strip_prefix("attach://") {
            Some(name) => uploads.get(name).map(Source::Upload).ok_or_else(missing),
            None => Ok(Source::Remote(value)),
        },
        None => uploads.get(field).map(Source::Upload).ok_or_else(missing),
    }
}

/// A `file_id` the fake issued. URLs are never fetched, so they fail like
/// unreachable ones. Deviation: a `file_id` is only accepted for its own
/// kind (Telegram lets some kinds stand in for others).
fn known_file(st: &State, id: &str, kind: MediaKind) -> Result<StoredFile, Fail> {
    let file = st
        .files
        .get(id)
        .ok_or_else(|| bad("wrong file identifier/HTTP URL specified"))?;
    if file.kind != kind {
        return Err(bad(format!(
            "can't use file of type {} as {}",
            file.kind.td_name(),
            kind.td_name()
        )));
    }
    Ok(file.clone())
}

fn file_ids(json: &Value) -> Vec<String> {
    let one = |v: &Value| v.get("file_id").and_then(Value::as_str).map(str::to_owned);
    match json {
        Value::Array(sizes) => sizes.iter().filter_map(one).collect(),
        other => one(other).into_iter().collect(),
    }
}

fn issue_ids(st: &mut State, kind: MediaKind) -> (String, String) {
    let n = st.next_file;
    st.next_file += 1;
    (
        format!("{}FakeTelegramFile{n:08}", kind.id_prefix()),
        format!("AQADFake{n:08}"),
    )
}

fn upload_file(
    st: &mut State,
    kind: MediaKind,
    upload: &Upload,
    p: &Params,
) -> Result<StoredFile, Fail> {
    let data = &upload.data;
    if data.is_empty() {
        return Err(bad("file must be non-empty"));
    }
    let file_name = Some(upload.file_name.clone()).filter(|n| !n.is_empty());
    let duration = || -> Result<i64, Fail> { Ok(int_param(p, "duration")?.unwrap_or(0).max(0)) };
    let json = match kind {
        MediaKind::Photo => {
            let (width, height) = check_photo(data)?;
            let longest = width.max(height);
            let mut bounds = Vec::new();
            if longest > THUMBNAIL_SIDE {
                bounds.push(THUMBNAIL_SIDE);
            }
            bounds.push(longest.min(MAX_PHOTO_SIDE));
            // Smallest first, like Telegram: bots must take the last one.
            let sizes = bounds
                .into_iter()
                .map(|bound| {
                    let (w, h) = scale(width, height, bound);
                    let bytes = (data.len() as u64 * u64::from(w) * u64::from(h)
                        / (u64::from(width) * u64::from(height)))
                    .max(1);
                    let (file_id, unique_id) = issue_ids(st, kind);
                    json!({
                        "file_id": file_id,
                        "file_unique_id": unique_id,
                        "file_size": bytes,
                        "width": w,
                        "height": h,
                    })
                })
                .collect();
            Value::Array(sizes)
        }
        MediaKind::Document | MediaKind::Audio | MediaKind::Voice => {
            let (file_id, unique_id) = issue_ids(st, kind);
            let mut v = json!({
                "file_id": file_id,
                "file_unique_id": unique_id,
                "file_size": data.len(),
            });
            if kind != MediaKind::Voice
                && let Some(name) = &file_name
            {
                v["file_name"] = json!(name);
            }
            match kind {
                MediaKind::Voice => {
                    v["duration"] = json!(duration()?);
                    v["mime_type"] = json!("audio/ogg");
                }
                MediaKind::Audio => {
                    v["duration"] = json!(duration()?);
                    for key in ["performer", "title"] {
                        if let Some(value) = str_param(p, key).filter(|s| !s.is_empty()) {
                            v[key] = json!(value);
                        }
                    }
                    let mime = mime_type(file_name.as_deref()).filter(|m| m.starts_with("audio/"));
                    v["mime_type"] = json!(mime.unwrap_or("audio/mpeg"));
                }
                _ => {
                    let mime = mime_type(file_name.as_deref());
                    v["mime_type"] = json!(mime.unwrap_or("application/octet-stream"));
                }
            }
            v
        }
    };
    Ok(StoredFile {
        kind,
        media: SentMedia {
            kind: kind.field().to_owned(),
            file_name,
            data: data.clone(),
        },
        json,
    })
}

/// Scales `width`x`height` so the longest side is at most `bound`.
fn scale(width: u32, height: u32, bound: u32) -> (u32, u32) {
    let longest = width.max(height);
    if longest <= bound {
        return (width, height);
    }
    let shrink =
        |side: u32| (u64::from(side) * u64::from(bound) / u64::from(longest)).max(1) as u32;
    (shrink(width), shrink(height))
}

/// The MIME type Telegram would report for a file name's extension.
fn mime_type(file_name: Option<&str>) -> Option<&'static str> {
    let (_, ext) = file_name?.rsplit_once('.')?;
    let mime = match ext.to_ascii_lowercase().as_str() {
        "txt" | "log" => "text/plain",
        "md" => "text/markdown",
        "csv" => "text/csv",
        "html" | "htm" => "text/html",
        "json" => "application/json",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        "ogg" | "oga" | "opus" => "audio/ogg",
        "flac" => "audio/flac",
        "wav" => "audio/x-wav",
        _ => return None,
    };
    Some(mime)
}

// ---------------------------------------------------------------------------
// Photo sniffing
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ImageFormat {
    Png,
    Jpeg,
    Gif,
    Webp,
}

/// Telegram only takes PNG, JPEG, GIF and WEBP photos it can read, within
/// its dimension rules; returns the photo's width and height.
fn check_photo(data: &[u8]) -> Result<(u32, u32), Fail> {
    let (width, height) = image_format(data)
        .and_then(|format| image_size(format, data))
        .filter(|&(w, h)| w > 0 && h > 0)
        .ok_or_else(|| bad("IMAGE_PROCESS_FAILED"))?;
    let (long, short) = (u64::from(width.max(height)), u64::from(width.min(height)));
    if u64::from(width) + u64::from(height) > MAX_PHOTO_SIDES_SUM || long > MAX_PHOTO_RATIO * short
    {
        return Err(bad("PHOTO_INVALID_DIMENSIONS"));
    }
    Ok((width, height))
}

fn image_format(data: &[u8]) -> Option<ImageFormat> {
    if data.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(ImageFormat::Png)
    } else if data.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(ImageFormat::Jpeg)
    } else if data.starts_with(b"GIF87a") || data.starts_with(b"GIF89a") {
        Some(ImageFormat::Gif)
    } else if data.starts_with(b"RIFF") && data.get(8..12) == Some(b"WEBP") {
        Some(ImageFormat::Webp)
    } else {
        None
    }
}

fn be16(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from(u16::from_be_bytes(
        data.get(at..at + 2)?.try_into().ok()?,
    )))
}

fn le16(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from(u16::from_le_bytes(
        data.get(at..at + 2)?.try_into().ok()?,
    )))
}

fn le24(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at + 3)?;
    Some(u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16)
}

/// Width and height from the image header.
fn image_size(format: ImageFormat, data: &[u8]) -> Option<(u32, u32)> {
    match format {
        ImageFormat::Png => {
            if data.get(12..16) != Some(b"IHDR") {
                return None;
            }
            let width = u32::from_be_bytes(data.get(16..20)?.try_into().ok()?);
            let height = u32::from_be_bytes(data.get(20..24)?.try_into().ok()?);
            Some((width, height))
        }
        ImageFormat::Gif => Some((le16(data, 6)?, le16(data, 8)?)),
        ImageFormat::Jpeg => jpeg_size(data),
        ImageFormat::Webp => match data.get(12..16)? {
            b"VP8 " if data.get(23..26) == Some(&[0x9D, 0x01, 0x2A]) => {
                Some((le16(data, 26)? & 0x3FFF, le16(data, 28)? & 0x3FFF))
            }
            b"VP8L" if data.get(20) == Some(&0x2F) => {
                let b = data.get(21..25)?;
                let (b0, b1, b2, b3) = (
                    u32::from(b[0]),
                    u32::from(b[1]),
                    u32::from(b[2]),
                    u32::from(b[3]),
                );
                let width = 1 + (b0 | (b1 & 0x3F) << 8);
                let height = 1 + (b1 >> 6 | b2 << 2 | (b3 & 0x0F) << 10);
                Some((width, height))
            }
            b"VP8X" => Some((1 + le24(data, 24)?, 1 + le24(data, 27)?)),
            _ => None,
        },
    }
}

/// Walks the JPEG segments up to the first start-of-frame marker.
fn jpeg_size(data: &[u8]) -> Option<(u32, u32)> {
    let mut i = 2;
    loop {
        if *data.get(i)? != 0xFF {
            return None;
        }
        let marker = *data.get(i + 1)?;
        i += 2;
        match marker {
            // Fill byte: the marker follows.
            0xFF => i -= 1,
            // Markers without a length.
            0x01 | 0xD0..=0xD8 => {}
            // End of image, or scan data before any frame header.
            0xD9 | 0xDA => return None,
            // SOF0..SOF15, except DHT, JPG and DAC.
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                // Length (2), precision (1), height (2), width (2).
                return Some((be16(data, i + 5)?, be16(data, i + 3)?));
            }
            _ => {
                let length = be16(data, i)? as usize;
                if length < 2 {
                    return None;
                }
                i += length;
            }
        }
    }
}
