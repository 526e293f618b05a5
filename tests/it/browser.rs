//! The report and the live `/` page in a real browser: headless Chromium (Debian
//! `chromium`, which `scripts/deps test` installs) renders them; the test reads the
//! rendered DOM and checks that the screenshot's timeline area is drawn, not blank.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::report::{assert_self_contained, attr, elements};
use crate::support::drill::{http_get, Drill};

const CHROMIUM: &str = "/usr/bin/chromium";

/// `None` (and a clear message) when Chromium is not installed here.
pub(crate) fn chromium() -> Option<&'static Path> {
    let path = Path::new(CHROMIUM);
    if path.exists() {
        Some(path)
    } else {
        eprintln!("SKIPPED: {CHROMIUM} is missing; `scripts/deps test` installs Debian's chromium");
        None
    }
}

/// Runs headless Chromium on `url` with `extra` flags, bounded by a minute (killed by PID
/// if it overstays); its stdout, or why it failed with the lines of its stderr that are not
/// D-Bus noise.
async fn run_chromium(browser: &Path, url: &str, extra: &[String]) -> Result<String, String> {
    let limit = Duration::from_secs(60);
    let profile = tempfile::tempdir().expect("profile dir");
    let out = profile.path().join("stdout");
    let err = profile.path().join("stderr");
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            // Shared memory from the temp dir, not /dev/shm: a container's /dev/shm is
            // 64 MB, and there the test servers' data shares it.
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.path().join("p").display()
        ))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("spawn chromium");
    let deadline = tokio::time::Instant::now() + limit;
    let failure = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            if status.success() {
                return Ok(std::fs::read_to_string(&out).unwrap_or_default());
            }
            break format!("exited with {status}");
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break format!("did not finish within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    Err(chromium_failed(url, &failure, &err))
}

fn chromium_failed(url: &str, failure: &str, stderr: &Path) -> String {
    let said = std::fs::read_to_string(stderr).unwrap_or_default();
    let lines: Vec<&str> = said.lines().filter(|l| !l.contains("dbus")).collect();
    format!(
        "chromium on {url} {failure}; its stderr without D-Bus lines:\n  {}",
        lines.join("\n  ")
    )
}

/// Headless Chromium has failed now and then on a busy 2-core machine (exit 0 having printed
/// nothing, in 2 of 4 full suite runs one day; never alone): each call is tried up to three
/// times, and the test fails with the last reason.
/// `output`: a file Chromium writes, removed before each try.
async fn with_retries(
    browser: &Path,
    url: &str,
    extra: &[String],
    output: Option<&Path>,
    done: impl Fn(&str) -> Result<(), String>,
) -> Result<String, String> {
    let mut why = String::new();
    for attempt in 1..=3 {
        if let Some(file) = output {
            let _ = std::fs::remove_file(file);
        }
        match run_chromium(browser, url, extra).await {
            Ok(text) => match done(&text) {
                Ok(()) => return Ok(text),
                Err(e) => why = e,
            },
            Err(e) => why = e,
        }
        println!("attempt {attempt}: {why}");
    }
    Err(why)
}

/// The DOM Chromium builds from `url`, or why there is none.
async fn try_dump_dom(browser: &Path, url: &str) -> Result<String, String> {
    with_retries(browser, url, &["--dump-dom".to_string()], None, |dom| {
        if dom.trim().is_empty() {
            Err(format!("chromium printed no DOM for {url}"))
        } else {
            Ok(())
        }
    })
    .await
}

pub(crate) async fn dump_dom(browser: &Path, url: &str) -> String {
    try_dump_dom(browser, url)
        .await
        .unwrap_or_else(|why| panic!("{why}"))
}

async fn screenshot(browser: &Path, url: &str, png: &Path, height: u32) -> Image {
    let flags = [
        format!("--screenshot={}", png.display()),
        format!("--window-size=1100,{height}"),
    ];
    with_retries(
        browser,
        url,
        &flags,
        Some(png),
        |_| match std::fs::metadata(png) {
            Ok(m) if m.len() > 0 => Ok(()),
            _ => Err(format!("chromium wrote no screenshot of {url}")),
        },
    )
    .await
    .unwrap_or_else(|why| panic!("{why}"));
    Image::read(png)
}

/// A decoded screenshot, 8-bit RGB.
struct Image {
    width: usize,
    height: usize,
    rgb: Vec<[u8; 3]>,
}

impl Image {
    fn read(path: &Path) -> Image {
        let file = std::fs::File::open(path).expect("screenshot file");
        let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
        decoder.set_transformations(png::Transformations::normalize_to_color8());
        let mut reader = decoder.read_info().expect("PNG header");
        let mut buf = vec![0; reader.output_buffer_size().expect("PNG size")];
        let info = reader.next_frame(&mut buf).expect("PNG frame");
        let channels = info.color_type.samples();
        let rgb = buf[..info.buffer_size()]
            .chunks(channels)
            .map(|p| match channels {
                1 | 2 => [p[0]; 3],
                _ => [p[0], p[1], p[2]],
            })
            .collect();
        Image {
            width: info.width as usize,
            height: info.height as usize,
            rgb,
        }
    }

    fn row(&self, y: usize) -> &[[u8; 3]] {
        &self.rgb[y * self.width..(y + 1) * self.width]
    }
}

fn near(p: [u8; 3], hex: &str) -> bool {
    within(p, hex, 24)
}

fn within(p: [u8; 3], hex: &str, tolerance: u8) -> bool {
    let c = u32::from_str_radix(hex.trim_start_matches('#'), 16).unwrap_or(0);
    let want = [(c >> 16) as u8, (c >> 8) as u8, c as u8];
    p.iter().zip(want).all(|(a, b)| a.abs_diff(b) <= tolerance)
}

/// The failover-state band's colours (as in the page), and its background where no
/// second was recorded.
const STATES: [&str; 4] = ["#3a9e5f", "#e8b02a", "#4a90d9", "#d7263d"];
const BAND_EMPTY: &str = "#eeeeee";
const RATE: &str = "#1f5fa8";

/// Finds the chart by its state band (the first row at least half as wide as the image
/// that is all state colours or the band's background, with some state colour) and checks the 700 rows above it (the chart's panels) are drawn: the pixels vary and at least `min_rate` are the
/// rate line's colour (the live page's 15-minute axis is mostly empty early in a run).
fn assert_timeline_drawn(img: &Image, what: &str, min_rate: usize) {
    let state_pixels = |y: usize| {
        img.row(y)
            .iter()
            .filter(|p| STATES.iter().any(|s| near(**p, s)))
            .count()
    };
    let band_pixels = |y: usize| {
        img.row(y)
            .iter()
            .filter(|p| within(**p, BAND_EMPTY, 3) || STATES.iter().any(|s| near(**p, s)))
            .count()
    };
    let band = (0..img.height)
        .find(|&y| state_pixels(y) >= 4 && band_pixels(y) * 2 >= img.width)
        .unwrap_or_else(|| panic!("{what}: no failover-state band in the screenshot"));
    let top = band.saturating_sub(700);
    let region: Vec<[u8; 3]> = (top..band).flat_map(|y| img.row(y).to_vec()).collect();
    let luma: Vec<f64> = region
        .iter()
        .map(|p| 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]))
        .collect();
    let mean = luma.iter().sum::<f64>() / luma.len() as f64;
    let sd = (luma.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / luma.len() as f64).sqrt();
    // The rate line and its light fill: the only blue in the panels above the band.
    let rate = region
        .iter()
        .filter(|p| {
            near(**p, RATE) || (p[2] > p[0].saturating_add(20) && p[2] > p[1].saturating_add(10))
        })
        .count();
    println!(
        "{what}: band at y={band} ({} px), region sd {sd:.1}, {rate} rate-line pixels",
        state_pixels(band)
    );
    assert!(sd > 8.0, "{what}: the timeline area is blank (sd {sd:.1})");
    assert!(
        rate >= min_rate,
        "{what}: no rate line drawn ({rate} pixels)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_renders_the_report_and_the_live_page() {
    let Some(browser) = chromium() else { return };
    let lab = crate::support::start_single(None).await;
    // Kept after the run for a look: target/tmp/browser-*.png.
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tempfile::tempdir().expect("temp dir");
    let dsn = lab.dsn(pgdrill_lab::Node::A);
    // Long enough never to end before the live page is taken (Chromium on a busy machine
    // takes seconds); stopped once it was.
    let drill = Drill::start(&["--dsn", &dsn, "--rate", "300", "--duration", "10m"]).await;
    // Some seconds of timeline for the live page to draw.
    tokio::time::sleep(Duration::from_secs(7)).await;

    // The live page, while the load runs.
    let mut live = format!("http://{}/", drill.addr);
    let dom = match try_dump_dom(browser, &live).await {
        Ok(dom) => dom,
        Err(why) if !why.contains("printed no DOM") => panic!("{why}"),
        Err(_) => {
            // In 2 of 4 full suite runs on a busy 2-core machine (never alone, nor under CPU
            // load alone) Chromium exited 0 three times in a row having printed nothing for the
            // live URL. The page as pgdrill serves it is then rendered from a file, so that its
            // rendering is still what is checked.
            let response = http_get(drill.addr, "/").await;
            let (head, page) = response.split_once("\r\n\r\n").expect("an HTTP response");
            assert!(
                head.starts_with("HTTP/1.") && head.contains(" 200 "),
                "{head}"
            );
            let copy = dir.path().join("live.html");
            std::fs::write(&copy, page).expect("write the live page");
            println!("no DOM from {live}; rendering the served page from {copy:?}");
            live = format!("file://{}", copy.display());
            dump_dom(browser, &live).await
        }
    };
    assert!(dom.contains("Last 15 minutes"), "{dom}");
    assert!(
        dom.contains("<svg class=\"chart\""),
        "live page has no chart"
    );
    assert!(dom.contains(">healthy<"), "state shown");
    assert!(dom.contains("<meta http-equiv=\"refresh\""));
    let img = screenshot(browser, &live, &shots.join("browser-live.png"), 1200).await;
    assert_timeline_drawn(&img, "live page", 10);

    let summary = drill.stop().await;
    let page = summary.report_html();
    assert_self_contained(&page);
    let file: PathBuf = dir.path().join("report.html");
    std::fs::write(&file, &page).expect("write report");
    let url = format!("file://{}", file.display());
    let dom = dump_dom(browser, &url).await;
    // The browser parsed what we wrote: the verdict, the chart, the sections.
    let verdict = elements(&dom, "<div class=\"verdict", "</div>");
    assert_eq!(verdict.len(), 1, "{dom}");
    assert!(verdict[0].contains("PASS"), "{}", verdict[0]);
    assert!(dom.contains("<svg class=\"chart\""));
    // One column a second of the run, however long the browser took before the stop.
    let columns = summary.timeline.iter().count();
    let ran = summary.duration_seconds;
    assert!(
        (columns as f64 - ran).abs() <= 2.0,
        "{columns} seconds of timeline in a {ran:.1} s run"
    );
    let label = elements(&dom, "<svg class=\"chart\"", ">")
        .first()
        .and_then(|s| attr(s, "aria-label"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(!label.is_empty(), "the chart is labelled");
    let img = screenshot(browser, &url, &shots.join("browser-report.png"), 1800).await;
    assert_timeline_drawn(&img, "report", 200);
    lab.shutdown().await;
}
