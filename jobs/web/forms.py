"""The dashboard's submit form: pasted URLs and/or an uploaded file, plus options.

The form only binds and renders. Every rule lives in `submission`, shared with
the API and the WebSocket submit, and its errors come back here as messages
naming the source line ("line 4: scheme must be http or https, not 'ftp'").
"""

from __future__ import annotations

from typing import Any

from django import forms

from jobs import conf
from jobs.exceptions import SubmissionError
from jobs.submission import parsing, validation
from jobs.submission.parsing import UrlLines
from jobs.submission.validation import JobRequest

ALLOWED_EXTENSIONS = (".txt", ".csv")
# Far above 100k URLs of ordinary length; stops a multi-gigabyte upload from being read into memory.
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_SHOWN_VALUE = 80


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
        help_text="A .txt file with one URL per line, or a .csv file with the URLs in a column headed "
        "\"url\" (else the first column). Its URLs are added after any pasted ones.",
        widget=forms.FileInput(attrs={"accept": ".txt,.csv,text/plain,text/csv"}),
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
    retries = forms.CharField(label="Retries", required=False)
    max_redirects = forms.CharField(label="Max redirects", required=False)
    max_bytes = forms.CharField(label="Max body bytes", required=False)
    respect_robots = forms.BooleanField(label="Respect robots.txt", required=False,
                                        help_text="Skip URLs that the host's robots.txt disallows.")
    save_bodies = forms.BooleanField(label="Save bodies", required=False,
                                     help_text="Keep each response body, downloadable per URL and as one zip.")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Read lazily (not at import) so override_settings reaches the limits.
        max_concurrency = conf.get("JOBS_MAX_CONCURRENCY")
        max_timeout = conf.get("JOBS_MAX_TIMEOUT")
        self.fields["concurrency"].initial = conf.get("JOBS_DEFAULT_CONCURRENCY")
        self.fields["concurrency"].help_text = (
            f"Requests in flight at once, 1–{max_concurrency} (default {conf.get('JOBS_DEFAULT_CONCURRENCY')})"
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

    number_options = ("per_host", "host_delay", "retries", "max_redirects", "max_bytes")
    flag_options = ("respect_robots", "save_bodies")

    def _init_options(self) -> None:
        """Defaults, hints and number inputs of the fetch options, from the settings."""
        numbers = {
            "per_host": (conf.get("JOBS_DEFAULT_PER_HOST"), 1, conf.get("JOBS_MAX_CONCURRENCY"), "1",
                         "Requests in flight to one host at once"),
            "host_delay": (0, 0, conf.get("JOBS_MAX_HOST_DELAY"), "any", "Seconds between requests to one host"),
            "retries": (conf.get("JOBS_DEFAULT_RETRIES"), 0, conf.get("JOBS_MAX_RETRIES"), "1",
                        "After a timeout, connect error or 408/429/5xx"),
            "max_redirects": (conf.get("JOBS_DEFAULT_MAX_REDIRECTS"), 0, conf.get("JOBS_MAX_REDIRECTS"), "1",
                              "Redirect hops followed"),
            "max_bytes": (conf.get("JOBS_DEFAULT_MAX_BYTES"), 1, conf.get("JOBS_MAX_BYTES"), "1",
                          "Largest body, after decompression"),
        }  # fmt: skip
        for name, (initial, lower, upper, step, hint) in numbers.items():
            field = self.fields[name]
            field.initial = f"{initial:g}" if isinstance(initial, float) else initial
            field.help_text = f"{hint}, {lower:g}–{upper:g}"
            field.widget = forms.NumberInput(attrs={"min": f"{lower:g}", "max": f"{upper:g}", "step": step})

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
            uploaded = self._read_upload(upload) if upload else UrlLines()
        except SubmissionError as exc:
            self._add_submission_errors(exc.errors, pasted_count=0, filename=upload.name if upload else "")
            return cleaned
        if not pasted and not uploaded:
            if upload:
                self.add_error("file", f"{upload.name}: no URLs found in the file.")
            else:
                self.add_error("urls", "Paste at least one URL, or upload a .txt or .csv file.")
            return cleaned
        urls = UrlLines(zip(pasted.line_numbers + uploaded.line_numbers, [*pasted, *uploaded], strict=True))
        name = cleaned.get("name") or ""
        if not name.strip() and upload:
            name = upload.name[: validation.NAME_MAX_LENGTH]
        try:
            self.job_request = validation.validate_submission(
                {"urls": urls, "name": name, "concurrency": cleaned.get("concurrency"),
                 "timeout": cleaned.get("timeout"),
                 **{option: cleaned.get(option) for option in validation.OPTION_FIELDS}}
            )
        except SubmissionError as exc:
            self._add_submission_errors(exc.errors, pasted_count=len(pasted), filename=upload.name if upload else "")
        return cleaned

    def _read_upload(self, upload: Any) -> UrlLines:
        """Parse an uploaded .txt/.csv; SubmissionError({"file": ...}) if it is unusable."""
        if not upload.name.lower().endswith(ALLOWED_EXTENSIONS):
            raise SubmissionError({"file": "must be a .txt or .csv file"})
        if upload.size > MAX_UPLOAD_BYTES:
            raise SubmissionError({"file": f"is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB"})
        return parsing.parse_url_file(upload.read(), filename=upload.name)

    def _add_submission_errors(self, errors: dict[str, Any], *, pasted_count: int, filename: str) -> None:
        """Attach submission's errors to fields; URL errors go to the textarea or the file by index."""
        for field, detail in errors.items():
            if field == "urls":
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
        return ("file" if from_file else "urls"), f"{prefix} {item.get('line', item['index'] + 1)}: {error}{suffix}"
