from django.contrib.auth import views as auth_views
from django.urls import path

from tenants import views
from tenants.views import account

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("login/code/", views.login_two_factor, name="login_two_factor"),
    path("logout/", views.logout_view, name="logout"),
    path("account/", account.account, name="account"),
    path(
        "account/password/",
        account.PasswordChangeView.as_view(),
        name="password_change",
    ),
    path(
        "account/sessions/end-others/",
        account.sessions_end_others,
        name="sessions_end_others",
    ),
    path("account/sessions/<str:code>/end/", account.session_end, name="session_end"),
    path("account/two-factor/", account.account_two_factor, name="account_two_factor"),
    path(
        "account/two-factor/setup/",
        account.two_factor_setup,
        name="two_factor_setup",
    ),
    path(
        "account/two-factor/confirm/",
        account.two_factor_confirm,
        name="two_factor_confirm",
    ),
    path(
        "account/two-factor/recovery-codes/",
        account.two_factor_recovery_renew,
        name="two_factor_recovery_renew",
    ),
    path(
        "account/two-factor/disable/",
        account.two_factor_disable,
        name="two_factor_disable",
    ),
    path("team/two-factor/", account.tenant_two_factor, name="tenant_two_factor"),
    path("tenant/switch/", views.tenant_switch, name="tenant_switch"),
    path("team/", views.team, name="team"),
    path("team/invite/", views.team_invite, name="team_invite"),
    path("team/members/<str:code>/role/", views.member_role, name="member_role"),
    path("team/members/<str:code>/remove/", views.member_remove, name="member_remove"),
    path(
        "team/invitations/<str:code>/revoke/",
        views.invitation_revoke,
        name="invitation_revoke",
    ),
    path("invitations/<str:token>/", views.invitation_accept, name="invitation_accept"),
    path("password/reset/", views.PasswordResetView.as_view(), name="password_reset"),
    path(
        "password/reset/sent/",
        auth_views.PasswordResetDoneView.as_view(),
        name="password_reset_done",
    ),
    path(
        "password/reset/<uidb64>/<token>/",
        views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path(
        "password/reset/complete/",
        auth_views.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
]
