"""The dashboard's submit form: pasted URLs and/or an uploaded file, plus options.

The form only binds and renders. Every rule lives in `submission`, shared with
the API and the WebSocket submit, and its errors come back here as messages
naming the source line ("line 4: scheme must be http or https, not 'ftp'").
"""

from __future__ import annotations

import json
from typing import Any

from django import forms

from jobs import conf
from jobs.engine.requestspec import METHODS
from jobs.exceptions import SubmissionError
from jobs.submission import parsing, requests, validation
from jobs.submission.parsing import UrlLines
from jobs.submission.requests import RequestLines
from jobs.submission.validation import JobRequest

ALLOWED_EXTENSIONS = (".txt", ".csv", ".jsonl", ".ndjson")
# Far above 100k URLs of ordinary length; stops a multi-gigabyte upload from being read into memory.
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_SHOWN_VALUE = 80


def _number(value: float) -> str:
    """1073741824 → "1,073,741,824" (not "1.07374e+09"); 0.5 → "0.5"."""
    return f"{value:,}" if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1000 else f"{value:g}"


def _plain(value: float) -> str:
    """A number for an HTML attribute: 1073741824 → "1073741824" (never "1.07374e+09"), 0.5 → "0.5"."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def binary_size(count: int) -> str:
    """Bytes in the largest binary unit that divides them evenly enough: 1073741824 → "1 GiB", 10485760 → "10 MiB"."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{count} bytes"


class JobSubmitForm(forms.Form):
    """Bind and render a submission; `clean()` defers to `validation.validate_submission`.

    After `is_valid()`, `job_request` holds the validated `JobRequest`.
    Numbers are plain text fields on purpose: the range rules and their
    messages are submission's, not Django's.
    """

    urls = forms.CharField(
        label="URLs",
        required=False,
        help_text="One per line. Blank lines and lines starting with # are skipped.",
        strip=False,
        widget=forms.Textarea(attrs={"rows": 10, "spellcheck": "false", "autocomplete": "off",
                                     "placeholder": "https://example.com/\nhttps://example.org/page"}),
    )
    file = forms.FileField(
        label="File",
        required=False,
        help_text="A .txt file with one URL per line, a .csv file with the URLs in a column headed "
        "\"url\" (else the first column), or a .jsonl file of requests, one JSON object per line: "
        "{\"url\": …, \"method\"?, \"headers\"?, \"json\"? or \"body\"?}. Its lines are added after any pasted URLs.",
        widget=forms.FileInput(attrs={"accept": ".txt,.csv,.jsonl,.ndjson,text/plain,text/csv,application/x-ndjson"}),
    )
    name = forms.CharField(
        label="Name",
        required=False,
        strip=False,
        help_text="Optional; defaults to the file name.",
        widget=forms.TextInput(attrs={"maxlength": validation.NAME_MAX_LENGTH}),
    )
    concurrency = forms.CharField(label="Concurrency", required=False)
    timeout = forms.CharField(label="Timeout per URL", required=False)
    # Fetch options (README "Job options"); ranges and messages are submission's, like the numbers above.
    per_host = forms.CharField(label="Per host", required=False)
    host_delay = forms.CharField(label="Delay per host", required=False)
    per_host_rate = forms.CharField(label="Rate per host", required=False)
    retries = forms.CharField(label="Retries", required=False)
    max_redirects = forms.CharField(label="Max redirects", required=False)
    max_bytes = forms.CharField(label="Max body bytes", required=False)
    url_deadline = forms.CharField(label="URL deadline", required=False)
    job_deadline = forms.CharField(label="Job deadline", required=False)
    # The job's request (README "Requests"); every line sends it unless a .jsonl line overrides it.
    method = forms.ChoiceField(label="Method", required=False, choices=[(m, m) for m in METHODS], initial="GET")
    headers = forms.CharField(
        label="Headers", required=False, strip=False,
        help_text="One per line, Name: value. Authorization, Cookie and X-Api-Key are stored encrypted and "
        "shown as •••.",
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "autocomplete": "off",
                                     "placeholder": "Authorization: Bearer …"}),
    )  # fmt: skip
    body = forms.CharField(label="Body", required=False, strip=False, help_text="Sent as given, with every request.",
                           widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}))
    retry_unsafe = forms.BooleanField(label="Retry POST and PATCH", required=False,
                                      help_text="They may have had their effect although they failed.")
    respect_robots = forms.BooleanField(label="Respect robots.txt", required=False,
                                        help_text="Skip URLs that the host's robots.txt disallows.")
    save_bodies = forms.BooleanField(label="Save bodies", required=False,
                                     help_text="Keep each response body, downloadable per URL and as one zip.")
    autothrottle = forms.BooleanField(label="Autothrottle", required=False,
                                      help_text="Adapt the requests in flight per host (1 to Per host) to its latency"
                                                " and its 429/503 answers, over all workers.")  # fmt: skip
    skip_invalid = forms.BooleanField(label="Skip invalid lines", required=False,
                                      help_text="Start the job with the valid lines; the job page lists the others.")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Read lazily (not at import) so override_settings reaches the limits.
        max_concurrency = conf.get("JOBS_MAX_CONCURRENCY")
        max_timeout = conf.get("JOBS_MAX_TIMEOUT")
        self.fields["concurrency"].initial = conf.get("JOBS_DEFAULT_CONCURRENCY")
        self.fields["concurrency"].help_text = (
            f"Requests in flight at once, 1–{_number(max_concurrency)} (default {conf.get('JOBS_DEFAULT_CONCURRENCY')})"
        )
        self.fields["concurrency"].widget = forms.NumberInput(
            attrs={"min": 1, "max": max_concurrency, "step": 1, "inputmode": "numeric"}
        )
        self.fields["timeout"].initial = f"{conf.get('JOBS_DEFAULT_TIMEOUT'):g}"
        self.fields["timeout"].help_text = (
            f"Seconds per URL, up to {max_timeout:g} (default {conf.get('JOBS_DEFAULT_TIMEOUT'):g})"
        )
        self.fields["timeout"].widget = forms.NumberInput(attrs={"max": f"{max_timeout:g}", "step": "any"})
        self._init_options()
        self.job_request: JobRequest | None = None

    number_options = (
        "per_host", "host_delay", "per_host_rate", "retries", "max_redirects", "max_bytes", "url_deadline", "job_deadline",
    )  # fmt: skip
    flag_options = ("respect_robots", "save_bodies", "retry_unsafe", "autothrottle", "skip_invalid")
    request_options = ("method", "headers", "body")

    def _init_options(self) -> None:
        """Defaults, hints and number inputs of the fetch options, from the settings."""
        numbers = {
            "per_host": (conf.get("JOBS_DEFAULT_PER_HOST"), 1, conf.get("JOBS_MAX_CONCURRENCY"), "1",
                         "Requests in flight to one host at once"),
            "host_delay": (0, 0, conf.get("JOBS_MAX_HOST_DELAY"), "any", "Seconds between requests to one host"),
            "per_host_rate": (None, *validation.PER_HOST_RATE_RANGE, "any",
                              "Requests per second to one host, over all workers (empty: no rate)"),
            "retries": (conf.get("JOBS_DEFAULT_RETRIES"), 0, conf.get("JOBS_MAX_RETRIES"), "1",
                        "After a timeout, connect error or 408/429/5xx"),
            "max_redirects": (conf.get("JOBS_DEFAULT_MAX_REDIRECTS"), 0, conf.get("JOBS_MAX_REDIRECTS"), "1",
                              "Redirect hops followed"),
            "max_bytes": (conf.get("JOBS_DEFAULT_MAX_BYTES"), 1, conf.get("JOBS_MAX_BYTES"), "1",
                          "Largest body, after decompression"),
        }  # fmt: skip
        for name, (initial, lower, upper, step, hint) in numbers.items():
            field = self.fields[name]
            field.initial = f"{initial:g}" if isinstance(initial, float) else ("" if initial is None else initial)
            field.help_text = f"{hint}, {_number(lower)}–{_number(upper)}"
            if name == "max_bytes":
                field.help_text += f" ({binary_size(upper)})"
            field.widget = forms.NumberInput(attrs={"min": _plain(lower), "max": _plain(upper), "step": step})
        deadlines = {"url_deadline": ("Seconds one URL may take over all attempts and waits", "JOBS_MAX_URL_DEADLINE"),
                     "job_deadline": ("Seconds the job may run from its start", "JOBS_MAX_JOB_DEADLINE")}  # fmt: skip
        for name, (hint, bound) in deadlines.items():
            upper = conf.get(bound)
            self.fields[name].help_text = f"{hint}, up to {upper:g}; empty: no limit"
            self.fields[name].widget = forms.NumberInput(attrs={"min": "0", "max": f"{upper:g}", "step": "any"})

    @property
    def file_was_sent(self) -> bool:
        """True when a file came with this (bound) form; browsers cannot refill a file input."""
        return self.is_bound and bool(self.files.get(self.add_prefix("file")))

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        upload = cleaned.get("file")
        try:
            pasted = parsing.parse_url_lines(cleaned.get("urls") or "")
            uploaded: UrlLines | RequestLines = self._read_upload(upload) if upload else UrlLines()
        except SubmissionError as exc:
            self._add_submission_errors(exc.errors, pasted_count=0, filename=upload.name if upload else "")
            return cleaned
        if not pasted and not uploaded:
            if upload:
                self.add_error("file", f"{upload.name}: no URLs found in the file.")
            else:
                self.add_error("urls", "Paste at least one URL, or upload a .txt or .csv file.")
            return cleaned
        numbered = zip(pasted.line_numbers + uploaded.line_numbers, [*pasted, *uploaded], strict=True)
        # A .jsonl file makes the job one of requests; the pasted URLs are plain lines of it.
        lines = {"requests": RequestLines(numbered)} if isinstance(uploaded, RequestLines) else {"urls": UrlLines(numbered)}
        name = cleaned.get("name") or ""
        if not name.strip() and upload:
            name = upload.name[: validation.NAME_MAX_LENGTH]
        try:
            self.job_request = validation.validate_submission(
                {**lines, "name": name, "concurrency": cleaned.get("concurrency"),
                 "timeout": cleaned.get("timeout"),
                 "skip_invalid": cleaned.get("skip_invalid"),
                 **{option: cleaned.get(option) for option in validation.OPTION_FIELDS},
                 **self._request_fields(cleaned)}
            )
        except SubmissionError as exc:
            self._add_submission_errors(exc.errors, pasted_count=len(pasted), filename=upload.name if upload else "")
        return cleaned

    def _request_fields(self, cleaned: dict[str, Any]) -> dict[str, Any]:
        """The job-level request fields as submission takes them (only those filled in)."""
        fields: dict[str, Any] = {}
        if cleaned.get("method") and cleaned["method"] != "GET":
            fields["method"] = cleaned["method"]
        try:
            fields["headers"] = requests.parse_headers_text(cleaned.get("headers") or "")
        except ValueError as exc:
            raise SubmissionError({"headers": str(exc)}) from exc
        if cleaned.get("body"):
            fields["body"] = cleaned["body"]
        if cleaned.get("retry_unsafe"):
            fields["retry_unsafe"] = True
        return fields

    def _read_upload(self, upload: Any) -> UrlLines | RequestLines:
        """Parse an uploaded .txt/.csv/.jsonl; SubmissionError({"file": ...}) if it is unusable."""
        if not upload.name.lower().endswith(ALLOWED_EXTENSIONS):
            raise SubmissionError({"file": "must be a .txt, .csv or .jsonl file"})
        if upload.size > MAX_UPLOAD_BYTES:
            raise SubmissionError({"file": f"is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB"})
        if requests.is_jsonl(upload.name):
            return requests.parse_request_file(upload.read())
        return parsing.parse_url_file(upload.read(), filename=upload.name)

    def _add_submission_errors(self, errors: dict[str, Any], *, pasted_count: int, filename: str) -> None:
        """Attach submission's errors to fields; URL errors go to the textarea or the file by index.

        The pasted lines refused are also put on the textarea (data-bad-lines), for static/js/badlines.js to mark.
        """
        bad_lines = [item["line"] for item in errors.get("urls", []) if "line" in item and item["index"] < pasted_count]
        if bad_lines:
            self.fields["urls"].widget.attrs["data-bad-lines"] = json.dumps(bad_lines)
        for field, detail in errors.items():
            if field in ("urls", "requests"):
                for item in detail:
                    target, message = self._url_error_message(item, pasted_count=pasted_count, filename=filename)
                    self.add_error(target, message)
            elif field == "file":
                self.add_error("file", f"{filename}: {detail}" if filename else str(detail))
            elif field in self.fields:
                self.add_error(field, str(detail))
            else:
                self.add_error(None, f"{field}: {detail}")

    @staticmethod
    def _url_error_message(item: dict[str, Any], *, pasted_count: int, filename: str) -> tuple[str, str]:
        """("urls" | "file", "line N: reason (value)") for one URL error item."""
        error = item["error"]
        if "index" not in item:
            # About the list as a whole ("too many URLs", "N more invalid URLs not listed").
            return "urls", error[:1].upper() + error[1:] + "."
        from_file = item["index"] >= pasted_count
        prefix = f"{filename} line" if from_file else "line"
        value = item.get("value") or ""
        if len(value) > MAX_SHOWN_VALUE:
            value = value[: MAX_SHOWN_VALUE - 1] + "…"
        suffix = f" ({value})" if value else ""
        where = f" {item['field']}" if "field" in item else ""  # a request line's bad field
        line = item.get("line", item["index"] + 1)
        return ("file" if from_file else "urls"), f"{prefix} {line}{where}: {error}{suffix}"
