"""`manage.py fetch urls.txt|- [--name --concurrency --timeout --user] [--wait]`: submit a job from the shell.

A thin shim over jobs.cli and jobs.submission (the rules every entry point
shares). Without --wait it prints the job id and returns; with --wait it draws
a progress bar until the job ends and exits 0 when every URL succeeded, 1 when
some failed, 3 when the job was cancelled or failed. Bad input exits 2.
Ctrl-C while waiting asks whether to cancel the job; when standard input is
not a terminal nobody can answer, so the job is left running and that is said.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs import cli
from jobs.exceptions import SubmissionError
from jobs.submission import service, validation
from jobs.submission.requests import RequestLines


class Command(BaseCommand):
    help = "Submit a job from a file of URLs (or - for standard input); --wait follows it with a progress bar."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("source", help="a .txt file (one URL per line), a .csv file (a 'url' column), a .jsonl "
                            "file of requests ({\"url\", \"method\"?, \"headers\"?, \"json\"? | \"body\"?} per line), or -")
        parser.add_argument("--name", default=None, help="job name (default: the file name)")
        parser.add_argument("--concurrency", default=None, help="requests in flight at once (default: the setting)")
        parser.add_argument("--timeout", default=None, help="seconds per URL (default: the setting)")
        parser.add_argument("--user", default=None, help="the job's owner (default: the only superuser)")
        parser.add_argument("--wait", action="store_true", help="follow the job with a progress bar until it ends")
        # The job's request; each line of a .jsonl file may override it.
        parser.add_argument("--method", default=None, help="HTTP method of every request (default GET)")
        parser.add_argument("--header", action="append", metavar="'NAME: VALUE'", help="a request header (repeat it)")
        parser.add_argument("--secret-header", action="append", metavar="NAME",
                            help="also store this header encrypted and never show it (Authorization, Cookie, "
                            "Proxy-Authorization and X-Api-Key always are)")
        parser.add_argument("--json", default=None, help="the request body, as JSON (sent as application/json)")
        parser.add_argument("--body", default=None, help="the request body, as text")
        parser.add_argument("--retry-unsafe", action="store_true", help="retry POST and PATCH requests too")
        parser.add_argument("--skip-invalid", action="store_true",
                            help="leave invalid lines out (each is listed) and submit the rest")

    def handle(self, *args: Any, **options: Any) -> None:
        source: str = options["source"]
        try:
            owner = cli.resolve_owner(options["user"])
            lines = cli.read_urls(source, stdin=sys.stdin.buffer)
            name = options["name"] if options["name"] is not None else ("" if source == "-" else source[-200:])
            request = validation.validate_submission(
                {("requests" if isinstance(lines, RequestLines) else "urls"): lines, "name": name,
                 "concurrency": options["concurrency"], "timeout": options["timeout"], 
                 "skip_invalid": options["skip_invalid"], **cli.request_fields(options)}
            )
        except cli.InputError as exc:
            raise CommandError(str(exc), returncode=2) from exc
        except SubmissionError as exc:
            raise CommandError("the job was not created:\n" + cli.describe_errors(exc.errors, source),
                               returncode=2) from exc
        if request.skipped_urls:
            self.stderr.write(f"Skipped {cli.plural(request.skipped_urls, 'invalid line')}:\n"
                              + cli.describe_errors({"urls": list(request.skipped)}, source))
        job = service.submit(owner, request)
        page = cli.page_url(job)
        self.stdout.write(f"Job {job.pk} queued: {cli.plural(job.total, 'URL')}, concurrency {job.concurrency}. "
                          f"Page: {page}")
        if not options["wait"]:
            return
        interrupted = threading.Event()
        previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.set())
        try:
            while not (job := cli.follow(job, stream=self.stderr._out, interrupted=interrupted)).is_terminal:
                interrupted.clear()
                # While asking, Ctrl-C is Python's own again: a second one abandons the question ("no").
                signal.signal(signal.SIGINT, previous)
                keep_following = self._on_interrupt(job, page)
                signal.signal(signal.SIGINT, lambda signum, frame: interrupted.set())
                if not keep_following:
                    sys.exit(cli.EXIT_INTERRUPTED)
        finally:
            signal.signal(signal.SIGINT, previous)
        self.stdout.write(cli.summary(job))
        code = cli.exit_code(job)
        if code:
            sys.exit(code)

    def _on_interrupt(self, job: Any, page: str) -> bool:
        """Ctrl-C while waiting: cancel if the user says so (then keep following); False to stop waiting."""
        answer = cli.ask_to_cancel(job, stdin=sys.stdin, stdout=self.stdout._out)
        if answer is None:
            self.stdout.write(f"\nInterrupted; not asking (standard input is not a terminal). Job {job.pk} keeps "
                              f"running: {page}")
            return False
        if answer:
            service.cancel(job.pk)
            self.stdout.write(f"Cancel requested for job {job.pk}.")
            return True
        self.stdout.write(f"Job {job.pk} keeps running: {page}")
        return False
