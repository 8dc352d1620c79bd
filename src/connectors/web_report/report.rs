//! One downloaded report file to records: gunzip when asked (or when the magic bytes say so),
//! then CSV with a header row, one JSON object of strings per row plus `_report_date`.
//!
//! Invariant: decompression is bounded, so a small gzip bomb cannot exhaust memory.

use std::io::Read;

use flate2::read::MultiGzDecoder;
use serde_json::Value;

use super::config::Gzip;
use crate::connectors::Error;

/// The field added to every record: the date of the listing link the file came from.
pub const REPORT_DATE_FIELD: &str = "_report_date";

/// The first two bytes of every gzip member.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// How a file is read.
#[derive(Debug, Clone, Copy)]
pub struct Format {
    pub gzip: Gzip,
    pub delimiter: u8,
    /// Largest accepted CSV text after decompression, in bytes.
    pub max_bytes: u64,
}

/// The records of one report file.
pub fn records(body: &[u8], format: Format, date: &str) -> Result<Vec<Value>, Error> {
    let compressed = match format.gzip {
        Gzip::Always => true,
        Gzip::Never => false,
        Gzip::Auto => body.starts_with(&GZIP_MAGIC),
    };
    let csv_text = if compressed {
        gunzip(body, format.max_bytes, date)?
    } else {
        body.to_vec()
    };
    crate::connectors::csv_rows::records(
        &csv_text,
        format.delimiter,
        &[(REPORT_DATE_FIELD, date)],
        &format!("report {date}"),
    )
}

fn gunzip(body: &[u8], max_bytes: u64, date: &str) -> Result<Vec<u8>, Error> {
    let mut text = Vec::new();
    MultiGzDecoder::new(body)
        .take(max_bytes.saturating_add(1))
        .read_to_end(&mut text)
        .map_err(|error| {
            Error::Response(format!("report {date}: not a valid gzip file: {error}"))
        })?;
    if text.len() as u64 > max_bytes {
        return Err(Error::Response(format!(
            "report {date}: more than {max_bytes} bytes once decompressed"
        )));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;
    use serde_json::json;

    use super::*;

    fn gzip(text: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(text).unwrap();
        encoder.finish().unwrap()
    }

    fn format(gzip: Gzip) -> Format {
        Format {
            gzip,
            delimiter: b',',
            max_bytes: 1_000,
        }
    }

    #[test]
    fn rows_become_objects_of_strings_with_the_report_date() {
        let text =
            b"\xEF\xBB\xBFdatestamp,Searches,market\n2026-11-01,12,UK\n2026-11-01,\"3,5\",US\n";
        let expected = vec![
            json!({"datestamp": "2026-11-01", "Searches": "12", "market": "UK", "_report_date": "2026-11-01"}),
            json!({"datestamp": "2026-11-01", "Searches": "3,5", "market": "US", "_report_date": "2026-11-01"}),
        ];
        assert_eq!(
            records(text, format(Gzip::Auto), "2026-11-01").unwrap(),
            expected
        );
        let zipped = gzip(text);
        assert_eq!(
            records(&zipped, format(Gzip::Auto), "2026-11-01").unwrap(),
            expected
        );
        assert_eq!(
            records(&zipped, format(Gzip::Always), "2026-11-01").unwrap(),
            expected
        );
        assert!(records(text, format(Gzip::Always), "2026-11-01").is_err());
        assert_eq!(
            records(b"", format(Gzip::Auto), "d").unwrap(),
            Vec::<Value>::new()
        );
    }

    #[test]
    fn semicolons_ragged_rows_duplicates_and_bombs() {
        let semicolon = Format {
            delimiter: b';',
            ..format(Gzip::Never)
        };
        assert_eq!(
            records(b"a;b\n1;2\n", semicolon, "d").unwrap(),
            vec![json!({"a": "1", "b": "2", "_report_date": "d"})]
        );
        let ragged = records(b"a,b\n1,2,3\n", format(Gzip::Never), "d").unwrap_err();
        assert!(ragged.to_string().contains("invalid CSV"), "{ragged}");
        let twice = records(b"a,a\n1,2\n", format(Gzip::Never), "d").unwrap_err();
        assert!(twice.to_string().contains("twice"), "{twice}");
        let bomb = gzip(&vec![b'x'; 5_000]);
        let error = records(&bomb, format(Gzip::Auto), "d").unwrap_err();
        assert!(
            error.to_string().contains("more than 1000 bytes"),
            "{error}"
        );
    }
}
