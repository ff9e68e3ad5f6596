"""Admin for API tokens: create (the token is shown once, on the page after saving) and revoke.

The token is never put in a message or the session: `response_add` renders it
straight into the response to the POST that created it.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from jobs.models import ApiToken
from jobs.web import tokens

# Where save_model() leaves the new secret for response_add() (same request only).
_SECRET_ATTRIBUTE = "_batchfetch_new_api_token"


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("__str__", "user", "created_at", "last_used_at", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter), "created_at")
    list_select_related = ("user",)
    search_fields = ("name", "prefix", "user__username")
    actions = ["revoke_tokens"]

    def get_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> list[str]:
        if obj is None:
            return ["user", "name"]
        return ["user", "name", "prefix", "created_at", "last_used_at", "revoked_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> list[str]:
        if obj is None:
            return []
        return ["user", "prefix", "created_at", "last_used_at", "revoked_at"]

    def save_model(self, request: HttpRequest, obj: ApiToken, form: ModelForm, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        new = tokens.create_token(user=obj.user, name=obj.name)
        # The admin goes on to log the addition with `obj`: make it the stored row.
        obj.pk, obj.prefix, obj.digest = new.token.pk, new.token.prefix, new.token.digest
        obj.created_at = new.token.created_at
        obj._state.adding = False
        setattr(request, _SECRET_ATTRIBUTE, new.secret)

    def response_add(self, request: HttpRequest, obj: ApiToken, post_url_continue: str | None = None) -> HttpResponse:
        secret = getattr(request, _SECRET_ATTRIBUTE, None)
        if secret is None:
            return super().response_add(request, obj, post_url_continue)
        context = {**self.admin_site.each_context(request), "token": obj, "secret": secret, "opts": self.opts,
                   "title": "API token created"}
        response = TemplateResponse(request, "admin/jobs/apitoken/created.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke selected API tokens")
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        active = list(queryset.filter(revoked_at__isnull=True))
        for token in active:
            tokens.revoke(token)
        self.message_user(request, f"Revoked {len(active)} token(s).", messages.SUCCESS)
