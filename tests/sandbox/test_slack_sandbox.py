"""The fake Slack Web API answers slack_sdk's real WebClient the way Slack does and keeps state."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from sandbox.slack import Call, FakeSlack

MODAL = {
    "type": "modal",
    "callback_id": "rollback",
    "title": {"type": "plain_text", "text": "Rollback"},
    "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "app to prod"}}],
}


def section(text: str) -> dict[str, object]:
    """Return a mrkdwn section block."""
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as server:
        server.add_channel("incidents")
        server.add_user("U1", name="alice", real_name="Alice Doe")
        server.add_user("U2", name="bob", real_name="Bob Roe")
        yield server


@pytest.fixture
def client(fake: FakeSlack) -> WebClient:
    return WebClient(token=fake.token, base_url=fake.url)


def error_of(call: object) -> str:
    """Run a Web API call that must fail and return Slack's error code."""
    with pytest.raises(SlackApiError) as caught:
        call()  # type: ignore[operator]
    return str(caught.value.response["error"])


def test_url_is_the_api_base_with_trailing_slash(fake: FakeSlack) -> None:
    assert fake.url.startswith("http://127.0.0.1:")
    assert fake.url.endswith("/api/")


def test_auth_test_answers_the_workspace_and_bot_ids(fake: FakeSlack, client: WebClient) -> None:
    answer = client.auth_test()
    assert (answer["team_id"], answer["user_id"], answer["bot_id"]) == (
        "T0SANDBOX",
        "U0BOT",
        "B0BOT",
    )
    assert answer["url"] == "https://sandbox.slack.com/"


def test_update_replaces_the_text_and_blocks_shown_in_the_channel(
    fake: FakeSlack, client: WebClient
) -> None:
    posted = client.chat_postMessage(channel="#incidents", text="Rolling back…")
    client.chat_update(
        channel=posted["channel"], ts=posted["ts"], text="Done", blocks=[section("*Done*")]
    )
    [message] = fake.messages("incidents")
    assert (message.ts, message.text, message.edits) == (posted["ts"], "Done", 1)
    assert message.blocks[0]["text"]["text"] == "*Done*"


def test_update_without_blocks_keeps_the_previous_blocks(
    fake: FakeSlack, client: WebClient
) -> None:
    posted = client.chat_postMessage(channel="incidents", text="a", blocks=[section("card")])
    client.chat_update(channel=posted["channel"], ts=posted["ts"], text="b")
    assert fake.message("incidents", posted["ts"]).blocks == (section("card"),)


def test_timestamps_are_unique_and_increasing(client: WebClient) -> None:
    stamps = [client.chat_postMessage(channel="incidents", text=str(i))["ts"] for i in range(5)]
    assert stamps == sorted(stamps, key=float)
    assert len(set(stamps)) == 5
    assert all(len(ts.split(".")[1]) == 6 for ts in stamps)


def test_thread_replies_stay_in_their_thread(fake: FakeSlack, client: WebClient) -> None:
    parent = client.chat_postMessage(channel="incidents", text="INC-1")
    other = client.chat_postMessage(channel="incidents", text="INC-2")
    reply = client.chat_postMessage(channel="incidents", text="plan", thread_ts=parent["ts"])
    assert reply["message"]["thread_ts"] == parent["ts"]
    thread = fake.thread("incidents", parent["ts"])
    assert [m.text for m in thread] == ["INC-1", "plan"]
    assert [m.text for m in fake.thread("incidents", other["ts"])] == ["INC-2"]
    replies = client.conversations_replies(channel=parent["channel"], ts=parent["ts"])
    assert [m["text"] for m in replies["messages"]] == ["INC-1", "plan"]
    assert replies["messages"][0]["reply_count"] == 1


def test_reply_to_a_reply_joins_the_parent_thread(fake: FakeSlack, client: WebClient) -> None:
    parent = client.chat_postMessage(channel="incidents", text="card")
    first = client.chat_postMessage(channel="incidents", text="1", thread_ts=parent["ts"])
    client.chat_postMessage(channel="incidents", text="2", thread_ts=first["ts"])
    assert [m.text for m in fake.thread("incidents", parent["ts"])] == ["card", "1", "2"]


def test_reply_to_an_unknown_thread_is_refused(client: WebClient) -> None:
    post = lambda: client.chat_postMessage(channel="incidents", text="x", thread_ts="1.000001")  # noqa: E731
    assert error_of(post) == "thread_not_found"


def test_history_lists_top_level_messages_newest_first(client: WebClient) -> None:
    first = client.chat_postMessage(channel="incidents", text="first")
    client.chat_postMessage(channel="incidents", text="reply", thread_ts=first["ts"])
    client.chat_postMessage(channel="incidents", text="second")
    history = client.conversations_history(channel=first["channel"])
    assert [m["text"] for m in history["messages"]] == ["second", "first"]
    assert history["messages"][1]["reply_count"] == 1


def test_post_where_the_bot_is_not_a_member_is_refused_until_it_joins(
    fake: FakeSlack, client: WebClient
) -> None:
    channel = fake.add_channel("ops", bot_is_member=False)
    assert error_of(lambda: client.chat_postMessage(channel=channel.id, text="x")) == (
        "not_in_channel"
    )
    client.conversations_join(channel=channel.id)
    assert client.chat_postMessage(channel=channel.id, text="x")["ok"]


def test_post_to_an_unknown_channel_is_refused(client: WebClient) -> None:
    assert error_of(lambda: client.chat_postMessage(channel="C404", text="x")) == (
        "channel_not_found"
    )


def test_more_than_fifty_blocks_are_refused(client: WebClient) -> None:
    blocks = [section(str(i)) for i in range(51)]
    post = lambda: client.chat_postMessage(channel="incidents", text="x", blocks=blocks)  # noqa: E731
    assert error_of(post) == "invalid_blocks"


def test_message_without_text_or_blocks_is_refused(client: WebClient) -> None:
    assert error_of(lambda: client.chat_postMessage(channel="incidents")) == "no_text"


def test_update_of_a_message_a_person_wrote_is_refused(fake: FakeSlack, client: WebClient) -> None:
    message = fake.add_message("incidents", user="U1", text="hi")
    update = lambda: client.chat_update(channel=message.channel, ts=message.ts, text="x")  # noqa: E731
    assert error_of(update) == "cant_update_message"


def test_post_to_a_user_id_opens_a_direct_message(fake: FakeSlack, client: WebClient) -> None:
    posted = client.chat_postMessage(channel="U1", text="your approval expired")
    assert posted["channel"].startswith("D")
    assert fake.channel(posted["channel"]).is_im
    assert [m.text for m in fake.messages(posted["channel"])] == ["your approval expired"]


def test_ephemeral_is_kept_apart_from_the_channel_messages(
    fake: FakeSlack, client: WebClient
) -> None:
    answer = client.chat_postEphemeral(channel="incidents", user="U1", text="You cannot approve")
    [ephemeral] = fake.ephemerals("incidents")
    assert (ephemeral.user, ephemeral.ts, ephemeral.text) == (
        "U1",
        answer["message_ts"],
        "You cannot approve",
    )
    assert fake.messages("incidents") == []


def test_ephemeral_to_an_unknown_user_is_refused(client: WebClient) -> None:
    post = lambda: client.chat_postEphemeral(channel="incidents", user="U404", text="x")  # noqa: E731
    assert error_of(post) == "user_not_in_channel"


def test_permalink_of_a_reply_points_into_its_thread(client: WebClient) -> None:
    parent = client.chat_postMessage(channel="incidents", text="card")
    reply = client.chat_postMessage(channel="incidents", text="r", thread_ts=parent["ts"])
    link = client.chat_getPermalink(channel=reply["channel"], message_ts=reply["ts"])["permalink"]
    assert link.startswith(f"https://sandbox.slack.com/archives/{reply['channel']}/p")
    assert f"thread_ts={parent['ts']}" in link


def test_views_open_then_update_keeps_the_latest_view(fake: FakeSlack, client: WebClient) -> None:
    opened = client.views_open(trigger_id="t1", view=MODAL)["view"]
    changed = {**MODAL, "blocks": [section("fix forward recommended")]}
    updated = client.views_update(view_id=opened["id"], hash=opened["hash"], view=changed)["view"]
    assert updated["id"] == opened["id"]
    assert updated["hash"] != opened["hash"]
    view = fake.view(opened["id"])
    assert (view.updates, view.callback_id) == (1, "rollback")
    assert view.blocks == [section("fix forward recommended")]


def test_views_update_finds_a_view_by_external_id(fake: FakeSlack, client: WebClient) -> None:
    opened = client.views_open(trigger_id="t1", view={**MODAL, "external_id": "inc-1"})["view"]
    client.views_update(external_id="inc-1", view={**MODAL, "private_metadata": "m"})
    assert fake.view(opened["id"]).private_metadata == "m"


def test_views_update_with_a_stale_hash_is_refused(client: WebClient) -> None:
    opened = client.views_open(trigger_id="t1", view=MODAL)["view"]
    client.views_update(view_id=opened["id"], hash=opened["hash"], view=MODAL)
    update = lambda: client.views_update(view_id=opened["id"], hash=opened["hash"], view=MODAL)  # noqa: E731
    assert error_of(update) == "hash_conflict"


def test_a_trigger_id_opens_only_one_view(client: WebClient) -> None:
    client.views_open(trigger_id="t1", view=MODAL)
    assert error_of(lambda: client.views_open(trigger_id="t1", view=MODAL)) == (
        "exchanged_trigger_id"
    )


def test_a_modal_title_over_24_characters_is_refused(client: WebClient) -> None:
    view = {**MODAL, "title": {"type": "plain_text", "text": "x" * 25}}
    assert error_of(lambda: client.views_open(trigger_id="t1", view=view)) == "invalid_arguments"


def test_views_push_stacks_on_the_open_modal(client: WebClient) -> None:
    opened = client.views_open(trigger_id="t1", view=MODAL)["view"]
    pushed = client.views_push(trigger_id="t2", view=MODAL)["view"]
    assert (pushed["root_view_id"], pushed["previous_view_id"]) == (opened["id"], opened["id"])


def test_views_publish_keeps_one_home_per_user(fake: FakeSlack, client: WebClient) -> None:
    home = {"type": "home", "blocks": [section("no active incidents")]}
    first = client.views_publish(user_id="U1", view=home)["view"]
    second = client.views_publish(user_id="U1", view={**home, "blocks": [section("INC-1")]})
    assert second["view"]["id"] == first["id"]
    published = fake.home("U1")
    assert published is not None and published.blocks == [section("INC-1")]


def test_conversations_create_refuses_a_taken_name(fake: FakeSlack, client: WebClient) -> None:
    created = client.conversations_create(name="inc-20250101-120000-app")["channel"]
    assert fake.channel("inc-20250101-120000-app").id == created["id"]
    create = lambda: client.conversations_create(name="inc-20250101-120000-app")  # noqa: E731
    assert error_of(create) == "name_taken"


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("Inc-Upper", "invalid_name_specials"),
        ("has space", "invalid_name_specials"),
        ("x" * 81, "invalid_name_maxlength"),
        ("---", "invalid_name_punctuation"),
    ],
)
def test_conversations_create_refuses_names_slack_refuses(
    client: WebClient, name: str, error: str
) -> None:
    assert error_of(lambda: client.conversations_create(name=name)) == error


def test_invite_adds_members_and_refuses_those_already_in(
    fake: FakeSlack, client: WebClient
) -> None:
    channel = client.conversations_create(name="inc-1")["channel"]
    client.conversations_invite(channel=channel["id"], users=["U1", "U2"])
    assert {"U1", "U2"} <= set(fake.channel("inc-1").members)
    assert [(i.channel, i.user) for i in fake.invites()] == [
        (channel["id"], "U1"),
        (channel["id"], "U2"),
    ]
    invite = lambda: client.conversations_invite(channel=channel["id"], users="U1")  # noqa: E731
    assert error_of(invite) == "already_in_channel"
    assert error_of(lambda: client.conversations_invite(channel=channel["id"], users="U9")) == (
        "user_not_found"
    )


def test_conversations_info_shows_membership(fake: FakeSlack, client: WebClient) -> None:
    info = client.conversations_info(channel=fake.channel("incidents").id)["channel"]
    assert (info["name"], info["is_member"]) == ("incidents", True)


def test_files_upload_v2_stores_the_content_and_shares_it_in_the_thread(
    fake: FakeSlack, client: WebClient
) -> None:
    parent = client.chat_postMessage(channel="incidents", text="card")
    answer = client.files_upload_v2(
        channel=parent["channel"],
        thread_ts=parent["ts"],
        content="kubectl rollout undo\n" * 200,
        filename="step-output.txt",
        title="Step output",
        initial_comment="Full output attached",
    )
    [stored] = fake.files()
    assert answer["file"]["id"] == stored.id
    assert (stored.name, stored.title, stored.channel, stored.thread_ts) == (
        "step-output.txt",
        "Step output",
        parent["channel"],
        parent["ts"],
    )
    assert stored.text == "kubectl rollout undo\n" * 200
    share = fake.thread("incidents", parent["ts"])[-1]
    assert (share.text, share.files) == ("Full output attached", (stored.id,))


def test_complete_upload_of_a_file_never_uploaded_is_refused(client: WebClient) -> None:
    url = client.files_getUploadURLExternal(filename="a.txt", length=3)
    complete = lambda: client.files_completeUploadExternal(files=[{"id": url["file_id"]}])  # noqa: E731
    assert error_of(complete) == "file_not_found"


def test_users_and_usergroups_answer_what_was_seeded(fake: FakeSlack, client: WebClient) -> None:
    fake.add_usergroup("S1", handle="prod-approvers", users=["U1", "U2"])
    assert client.users_info(user="U1")["user"]["real_name"] == "Alice Doe"
    assert client.usergroups_users_list(usergroup="S1")["users"] == ["U1", "U2"]
    assert error_of(lambda: client.users_info(user="U404")) == "user_not_found"
    assert client.team_info()["team"]["id"] == "T0SANDBOX"


def test_a_wrong_token_is_refused(fake: FakeSlack) -> None:
    client = WebClient(token="xoxb-wrong", base_url=fake.url)
    assert error_of(client.auth_test) == "invalid_auth"
    assert fake.calls_to("auth.test")[0].error == "invalid_auth"


def test_a_missing_token_is_not_authed(fake: FakeSlack) -> None:
    client = WebClient(base_url=fake.url)
    assert error_of(lambda: client.chat_postMessage(channel="incidents", text="x")) == "not_authed"
    assert fake.messages("incidents") == []


def test_unknown_method_answers_unknown_method(client: WebClient) -> None:
    assert error_of(lambda: client.api_call("chat.teleport")) == "unknown_method"


def test_rate_limit_reaches_slack_sdk_as_429_with_retry_after(
    fake: FakeSlack, client: WebClient
) -> None:
    fake.fail_next("chat.postMessage", retry_after=7)
    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(channel="incidents", text="x")
    response = caught.value.response
    assert (response.status_code, response["error"]) == (429, "ratelimited")
    assert response.headers["Retry-After"] == "7"
    assert fake.messages("incidents") == []
    assert client.chat_postMessage(channel="incidents", text="x")["ok"]


def test_rate_limit_retry_handler_retries_then_succeeds(fake: FakeSlack) -> None:
    retrying = WebClient(
        token=fake.token,
        base_url=fake.url,
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=2)],
    )
    fake.fail_next("chat.postMessage", retry_after=0)
    assert retrying.chat_postMessage(channel="incidents", text="x")["ok"]
    assert [c.status for c in fake.calls_to("chat.postMessage")] == [429, 200]
    assert [m.text for m in fake.messages("incidents")] == ["x"]


def test_injected_error_answers_ok_false_the_given_times(
    fake: FakeSlack, client: WebClient
) -> None:
    fake.fail_next("views.open", error="expired_trigger_id", status=200, times=2)
    assert error_of(lambda: client.views_open(trigger_id="t1", view=MODAL)) == (
        "expired_trigger_id"
    )
    assert error_of(lambda: client.views_open(trigger_id="t2", view=MODAL)) == (
        "expired_trigger_id"
    )
    assert client.views_open(trigger_id="t3", view=MODAL)["ok"]
    assert [c.status for c in fake.calls_to("views.open")] == [200, 200, 200]


def test_calls_record_method_args_and_headers_in_order(fake: FakeSlack, client: WebClient) -> None:
    client.chat_postMessage(channel="incidents", text="x", blocks=[section("b")])
    client.auth_test()
    assert [c.method for c in fake.calls] == ["chat.postMessage", "auth.test"]
    [call] = fake.calls_to("chat.postMessage")
    assert call.args["blocks"] == [section("b")]
    assert call.headers["Authorization"] == f"Bearer {fake.token}"
    assert call.response["ts"]


def test_form_encoded_bodies_are_accepted_with_json_fields(fake: FakeSlack) -> None:
    answer = httpx.post(
        f"{fake.url}chat.postMessage",
        data={"token": fake.token, "channel": "incidents", "blocks": '[{"type": "divider"}]'},
    ).json()
    assert answer["ok"], answer
    assert fake.messages("incidents")[0].blocks == ({"type": "divider"},)


def test_on_call_hook_sees_each_call_before_the_client_returns(
    fake: FakeSlack, client: WebClient
) -> None:
    seen: list[Call] = []
    fake.on_call(seen.append)
    client.chat_postMessage(channel="incidents", text="x")
    assert [(c.method, c.ok) for c in seen] == [("chat.postMessage", True)]


def test_transcript_shows_threads_edits_and_buttons(fake: FakeSlack, client: WebClient) -> None:
    parent = client.chat_postMessage(channel="incidents", text="INC-1")
    buttons = {
        "type": "actions",
        "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Approve"}}],
    }
    reply = client.chat_postMessage(
        channel="incidents", text="plan", blocks=[section("Plan"), buttons], thread_ts=parent["ts"]
    )
    client.chat_update(channel=reply["channel"], ts=reply["ts"], text="approved")
    lines = fake.transcript("incidents").splitlines()
    assert lines[0].endswith("INC-1")
    assert lines[1].startswith("    [") and lines[1].endswith("(edited) Plan | [Approve]")


def test_two_fakes_run_side_by_side_on_different_ports() -> None:
    with FakeSlack() as one, FakeSlack(token="xoxb-other") as two:
        assert one.url != two.url
        WebClient(token=one.token, base_url=one.url).chat_postMessage(channel="general", text="1")
        WebClient(token=two.token, base_url=two.url).chat_postMessage(channel="general", text="2")
        assert [m.text for m in one.messages("general")] == ["1"]
        assert [m.text for m in two.messages("general")] == ["2"]
