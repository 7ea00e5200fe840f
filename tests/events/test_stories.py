"""Stories exactly as Rasa 3.6 writes them.

Every expected text below was produced by Rasa 3.6.21's own writers (``YAMLStoryWriter.dumps`` and
``Story.as_story_string(flat=True)`` with ruamel.yaml 0.17.21) on the same events.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from events._yaml import DoubleQuoted, Literal, dump
from events.model import (
    EVENT_TYPES,
    ActionExecuted,
    ActionExecutionRejected,
    ActionReverted,
    ActiveLoop,
    AgentUttered,
    AllSlotsReset,
    BotUttered,
    ConversationPaused,
    ConversationResumed,
    DefinePrevUserUtteredFeaturization,
    EntitiesAdded,
    Event,
    FollowupAction,
    LoopInterrupted,
    ReminderCancelled,
    ReminderScheduled,
    Restarted,
    SessionStarted,
    SlotSet,
    StoryExported,
    UserUtteranceReverted,
    UserUttered,
)
from events.stories import (
    Story,
    UnsupportedStoryFormat,
    UserView,
    annotate,
    markdown_story,
    story_string,
    yaml_stories,
)

LISTEN = ActionExecuted("action_listen")
BOB: list[dict[str, Any]] = [{"entity": "name", "value": "Bob", "start": 9, "end": 12}]
BERLIN: list[dict[str, Any]] = [{"entity": "city", "value": "Berlin", "start": 10, "end": 16}]


def user(
    text: str | None, intent: str | None = None, entities: Any = None, **more: Any
) -> UserUttered:
    """A user event the way Rasa builds one (intent dict only when a name is given)."""
    return UserUttered.create(text, {"name": intent, **more} if intent else {}, entities)


def one_story(*events: Event, views: dict[int, UserView] | None = None, **options: Any) -> str:
    return yaml_stories([Story("s", list(events), views or {})], header=False, **options)


def slot_yaml(key: Any, value: Any) -> str:
    return one_story(SlotSet(key, value))


# --- the two examples of rasa-semantics.md §2.11 -------------------------------------------------


def test_yaml_export_keeps_reverted_turns_like_rasa() -> None:
    events: list[Event] = [
        LISTEN,
        user("hello there", "goodbye"),
        UserUtteranceReverted(),
        LISTEN,
        user("hello there", "greet"),
        ActionExecuted("utter_goodbye"),
        BotUttered("bye"),
        ActionReverted(),
        ActionExecuted("utter_greet"),
        BotUttered("hi"),
        LISTEN,
    ]
    assert yaml_stories([Story("interactive_story_1", events)]) == (
        'version: "3.1"\n'
        "stories:\n"
        "- story: interactive_story_1\n"
        "  steps:\n"
        "  - intent: goodbye\n"
        "  - intent: greet\n"
        "  - action: utter_goodbye\n"
        "  - action: utter_greet\n"
    )


MARKDOWN_EVENTS: list[Event] = [
    ActionExecuted("action_session_start"),
    SessionStarted(),
    LISTEN,
    user("hi, I am Bob", "greet", BOB),
    DefinePrevUserUtteredFeaturization(False),
    SlotSet("name", "Bob"),
    ActionExecuted("utter_greet"),
    BotUttered("Hi Bob"),
    LISTEN,
    user("bye", "goodbye"),
    ActionExecuted("utter_wrong"),
    BotUttered("?"),
    ActionReverted(),
    ActionExecuted("utter_bye"),
    LISTEN,
    user("oops", "oops"),
    ActionExecuted("action_unlikely_intent"),
    ActionExecuted("action_default_fallback"),
    UserUtteranceReverted(),
    ActiveLoop("my_form"),
    LoopInterrupted(True),
    ActionExecutionRejected("my_form"),
    FollowupAction("x"),
    ConversationPaused(),
    AgentUttered("human here"),
    ReminderScheduled("r", datetime.fromisoformat("2030-01-01T00:00:00"), "n1", None, True),
    ReminderCancelled("n1"),
    EntitiesAdded([{"entity": "a", "value": "b"}]),
    AllSlotsReset(),
    Restarted(),
    ActionExecuted("action_session_start"),
    SessionStarted(),
    LISTEN,
    user("hello", "greet"),
]


def test_markdown_story_matches_rasa() -> None:
    assert markdown_story(Story("conv1", MARKDOWN_EVENTS)) == (
        "## conv1\n"
        '* greet{"name": "Bob"}\n'
        '    - slot{"name": "Bob"}\n'
        "    - utter_greet\n"
        "* goodbye\n"
        "    - utter_wrong\n"
        "    - undo\n"
        "    - utter_bye\n"
        "* oops\n"
        "    - action_default_fallback\n"
        "    - rewind\n"
        '    - active_loop{"name": "my_form"}\n'
        '    - followup{"name": "x"}\n'
        "    - ConversationPaused()\n"
        '    - reminder{"intent": "r", "date_time": "2030-01-01T00:00:00", "entities": null,'
        ' "name": "n1", "kill_on_user_msg": true}\n'
        '    - cancel_reminder{"name": "n1", "intent": null, "entities": null}\n'
        "    - reset_slots\n"
        "    - restart\n"
        "* greet\n"
    )


def test_the_same_events_as_yaml() -> None:
    assert yaml_stories([Story("conv1", MARKDOWN_EVENTS)], header=False) == (
        "- story: conv1\n"
        "  steps:\n"
        "  - intent: greet\n"
        "    entities:\n"
        "    - name: Bob\n"
        "  - slot_was_set:\n"
        "    - name: Bob\n"
        "  - action: utter_greet\n"
        "  - intent: goodbye\n"
        "  - action: utter_wrong\n"
        "  - action: utter_bye\n"
        "  - intent: oops\n"
        "  - action: action_default_fallback\n"
        "  - active_loop: my_form\n"
        "  - intent: greet\n"
    )


# --- story strings, one per event type ------------------------------------------------------------

STORY_STRINGS: list[tuple[Event, str | None]] = [
    (user("hi, I am Bob", "greet", BOB), 'greet{"name": "Bob"}'),
    (DefinePrevUserUtteredFeaturization(True), None),
    (EntitiesAdded([{"entity": "a", "value": "b"}]), None),
    (BotUttered("hi", {"buttons": None}), None),
    (AgentUttered("hi"), None),
    (ActionExecuted("utter_greet", "RulePolicy", 1.0), "utter_greet"),
    (SlotSet("name", "Bob"), 'slot{"name": "Bob"}'),
    (AllSlotsReset(), "reset_slots"),
    (Restarted(), "restart"),
    (UserUtteranceReverted(), "rewind"),
    (ActionReverted(), "undo"),
    (ConversationPaused(), "ConversationPaused()"),
    (ConversationResumed(), "resume"),
    (FollowupAction("utter_x"), 'followup{"name": "utter_x"}'),
    (
        ReminderScheduled(
            "remind",
            datetime.fromisoformat("2030-01-01T12:00"),
            "r1",
            [{"entity": "x", "value": 1}],
            False,
        ),
        'reminder{"intent": "remind", "date_time": "2030-01-01T12:00:00",'
        ' "entities": [{"entity": "x", "value": 1}], "name": "r1", "kill_on_user_msg": false}',
    ),
    (
        ReminderCancelled("r1", "remind"),
        'cancel_reminder{"name": "r1", "intent": "remind", "entities": null}',
    ),
    (StoryExported("stories.yml"), "export"),
    (SessionStarted(), None),
    (ActiveLoop("my_form"), 'active_loop{"name": "my_form"}'),
    (LoopInterrupted(True), None),
    (ActionExecutionRejected("my_form"), None),
]


def test_every_event_type_has_a_story_string_case() -> None:
    assert {type(event) for event, _ in STORY_STRINGS} == set(EVENT_TYPES)


@pytest.mark.parametrize(
    ("event", "expected"), STORY_STRINGS, ids=lambda x: getattr(x, "TAG", None)
)
def test_story_string(event: Event, expected: str | None) -> None:
    assert story_string(event) == expected


def test_story_strings_of_empty_events() -> None:
    assert story_string(FollowupAction()) == 'followup{"name": null}'
    assert story_string(ActiveLoop()) == 'active_loop{"name": null}'
    assert story_string(ActionExecuted("")) == ""
    assert story_string(UserUttered.create()) == ""
    assert story_string(user(None, "affirm")) == "affirm"


def test_json_escaping_follows_rasa() -> None:
    # slot and user-entity JSON keep non-ASCII characters; every other JSON part is ASCII-escaped
    assert story_string(SlotSet("ü", "ü")) == 'slot{"ü": "ü"}'
    assert story_string(user(None, "ü", [{"entity": "ü", "value": "ü"}])) == 'ü{"ü": "ü"}'
    assert story_string(FollowupAction("ü")) == 'followup{"name": "\\u00fc"}'
    assert story_string(ActiveLoop("ü")) == 'active_loop{"name": "\\u00fc"}'
    assert story_string(ReminderCancelled("é", "i", [{"a": "ü"}])) == (
        'cancel_reminder{"name": "\\u00e9", "intent": "i", "entities": [{"a": "\\u00fc"}]}'
    )
    reminder = ReminderScheduled(
        "ü",
        datetime.fromisoformat("2030-01-01T12:00:00.5+02:00"),
        "é",
        [{"entity": "x", "value": "ü"}],
        False,
    )
    assert story_string(reminder) == (
        'reminder{"intent": "\\u00fc", "date_time": "2030-01-01T12:00:00.500000+02:00",'
        ' "entities": [{"entity": "x", "value": "\\u00fc"}], "name": "\\u00e9",'
        ' "kill_on_user_msg": false}'
    )


def test_user_story_string_maps_entity_types_to_values() -> None:
    entities = [
        {"entity": "city", "value": "Berlin", "role": "from"},
        {"entity": "count", "value": 2},
        {"entity": "city", "value": "Paris"},
    ]
    # one key per entity type: the last value wins, in the place of the first
    assert story_string(user("x", "inform", entities)) == 'inform{"city": "Paris", "count": 2}'


def test_the_user_view_overrides_entities_and_featurization() -> None:
    event = user("I live in Berlin", "inform", BERLIN)
    merged = UserView([*BERLIN, {"entity": "mood", "value": "happy"}], False)
    assert story_string(event, user=merged) == 'inform{"city": "Berlin", "mood": "happy"}'
    with pytest.raises(UnsupportedStoryFormat):
        story_string(event, user=UserView(BERLIN, True))
    assert story_string(event, user=UserView([], None)) == "inform"


def test_text_featurized_user_messages_need_e2e_in_markdown() -> None:
    with pytest.raises(UnsupportedStoryFormat, match="text-featurized"):
        story_string(user("just text"))
    with pytest.raises(UnsupportedStoryFormat):
        markdown_story(Story("s", [user("just text")]))
    assert story_string(user("just text"), e2e=True) == "just text"


def test_e2e_user_story_strings() -> None:
    assert (
        story_string(user("hi, I am Bob", "greet", BOB), e2e=True) == "greet: hi, I am [Bob](name)"
    )
    assert story_string(user(None, "affirm"), e2e=True) == "affirm: "
    assert story_string(UserUttered.create(), e2e=True) == ""
    assert (
        story_string(
            user('/inform{"x": 1}', "inform", [{"entity": "x", "value": 1, "start": 0, "end": 3}]),
            e2e=True,
        )
        == 'inform: /inform{"x": 1}'
    )


def test_e2e_markdown_story() -> None:
    events: list[Event] = [
        LISTEN,
        user("hi, I am Bob", "greet", BOB),
        SlotSet("name", "Bob"),
        ActionExecuted("utter_greet"),
        user("text only"),
        user(None, "affirm"),
        UserUttered.create(),
    ]
    assert markdown_story(Story("conv1", events), e2e=True) == (
        "## conv1\n"
        "* greet: hi, I am [Bob](name)\n"
        '    - slot{"name": "Bob"}\n'
        "    - utter_greet\n"
        "* text only\n"
        "* affirm: \n"
        "* \n"
    )


def test_markdown_story_uses_the_views() -> None:
    story = Story("s", [user("I live in Berlin", "inform", BERLIN)], {0: UserView(BERLIN, True)})
    with pytest.raises(UnsupportedStoryFormat):
        markdown_story(story)
    assert markdown_story(story, e2e=True) == "## s\n* inform: I live in [Berlin](city)\n"
    assert story.view(0) == UserView(BERLIN, True)
    assert Story("t", []).view(0) is None


def test_bot_texts_cannot_be_written_as_markdown() -> None:
    for event in (
        ActionExecuted(action_text="Hello!"),
        ActionExecuted("utter_x", action_text="Hello!"),
    ):
        with pytest.raises(UnsupportedStoryFormat, match="end-to-end bot"):
            story_string(event, e2e=True)
    with pytest.raises(UnsupportedStoryFormat):
        markdown_story(Story("s", [ActionExecuted(action_text="Hello!")]), e2e=True)


@pytest.mark.parametrize(
    "entities",
    [[{"entity": "city"}], [{"value": "Berlin"}], ["city"], [{"entity": {"a": 1}, "value": 1}]],
)
def test_malformed_entities_fail_like_rasa(entities: list[Any]) -> None:
    with pytest.raises(UnsupportedStoryFormat):
        story_string(user("x", "inform", entities))


# --- YAML steps -----------------------------------------------------------------------------------


def test_retrieval_intents_use_the_full_name_in_yaml_only() -> None:
    event = user("what is your name", "faq", full_retrieval_intent_name="faq/ask_name")
    assert one_story(event, ActionExecuted("utter_faq")) == (
        "- story: s\n  steps:\n  - intent: faq/ask_name\n  - action: utter_faq\n"
    )
    assert story_string(event) == "faq"


def test_user_steps() -> None:
    events: list[Event] = [
        user("I live in Berlin", None, BERLIN),  # text only: featurized by text
        user(
            "I live in Berlin",
            "inform",
            [
                {
                    "entity": "city",
                    "value": "Berlin",
                    "start": 10,
                    "end": 16,
                    "role": "home",
                    "group": "1",
                },
                {"entity": "country"},
            ],
        ),
        user(None, "affirm"),
        UserUttered.create(),  # an empty step is dropped
    ]
    assert one_story(*events) == (
        "- story: s\n"
        "  steps:\n"
        "  - entities:\n"
        "    - city: Berlin\n"
        "    user: |-\n"
        "      I live in [Berlin](city)\n"
        "  - intent: inform\n"
        "    entities:\n"
        "    - city: Berlin\n"
        "    - country\n"
        "  - intent: affirm\n"
    )


def test_user_steps_follow_the_views() -> None:
    event = user("I live in Berlin", "inform", BERLIN)
    merged = [*BERLIN, {"entity": "mood", "value": "happy"}]
    assert one_story(event, views={0: UserView(merged, True)}) == (
        "- story: s\n"
        "  steps:\n"
        "  - entities:\n"
        "    - city: Berlin\n"
        "    - mood: happy\n"
        "    user: |-\n"
        "      I live in [Berlin](city)\n"
    )
    assert (
        one_story(event, views={0: UserView([], False)})
        == "- story: s\n  steps:\n  - intent: inform\n"
    )


def test_action_steps() -> None:
    events = [
        ActionExecuted(action_text="Nice to meet you!"),
        ActionExecuted("", action_text=""),
        ActionExecuted("..."),
        LISTEN,
        ActionExecuted("action_session_start"),
        ActionExecuted("action_unlikely_intent"),
        ActionExecuted("utter_greet", action_text="ignored"),
    ]
    assert one_story(*events) == (
        "- story: s\n  steps:\n  - bot: Nice to meet you!\n  - action: utter_greet\n"
    )


def test_slot_and_loop_steps_are_never_merged() -> None:
    events: list[Event] = [SlotSet("a", 1), SlotSet("b", 2), ActiveLoop("form"), ActiveLoop(None)]
    assert one_story(*events) == (
        "- story: s\n"
        "  steps:\n"
        "  - slot_was_set:\n"
        "    - a: 1\n"
        "  - slot_was_set:\n"
        "    - b: 2\n"
        "  - active_loop: form\n"
        "  - active_loop: null\n"
    )


def test_other_events_make_no_steps() -> None:
    silent = [
        event
        for event, _ in STORY_STRINGS
        if not isinstance(event, UserUttered | ActionExecuted | SlotSet | ActiveLoop)
    ]
    assert len(silent) == 17
    assert one_story(*silent) == "- story: s\n  steps: []\n"


def test_test_stories_write_text_and_intent_but_no_entity_list() -> None:
    events = [
        user("I live in Berlin", "inform", BERLIN),
        user(
            '[München]{"entity": "city"} and Paris',
            "inform",
            [
                {"entity": "city", "value": "Paris", "start": 12, "end": 17},
                {"entity": "city", "value": "München", "start": 0, "end": 7},
            ],
        ),
        user(None, "affirm"),
        user("two\nlines\n", "chat"),
    ]
    assert yaml_stories([Story("test", events)], test_stories=True) == (
        'version: "3.1"\n'
        "stories:\n"
        "- story: test\n"
        "  steps:\n"
        "  - intent: inform\n"
        "    user: |-\n"
        "      I live in [Berlin](city)\n"
        "  - intent: inform\n"
        "    user: |-\n"
        "      [München](city) and [Paris](city)\n"
        "  - intent: affirm\n"
        "  - intent: chat\n"
        "    user: |\n"
        "      two\n"
        "      lines\n"
    )


def test_literal_blocks_keep_spaces_and_breaks() -> None:
    assert (
        one_story(user("hallo\nwelt "), user(" lead\n\n"))
        == (
            "- story: s\n"
            "  steps:\n"
            "  - user: |-\n"
            "      hallo\n"
            "      welt \n"
            "  - user: |2+\n"
            "       lead\n"
            "\n"
        )
        + "...\n"
    )  # a "keep" block at the very end leaves the document open: ruamel closes it
    assert one_story(user("a\n\nb")).endswith("  - user: |-\n      a\n\n      b\n")


def test_appending_and_empty_outputs() -> None:
    stories = [Story("one", [user("hi", "greet")]), Story("two", [ActionExecuted("utter_x")])]
    items = (
        "- story: one\n  steps:\n  - intent: greet\n- story: two\n  steps:\n  - action: utter_x\n"
    )
    assert yaml_stories(stories, header=False) == items
    assert yaml_stories(stories) == 'version: "3.1"\nstories:\n' + items
    # with no story at all Rasa writes the version even when appending
    assert yaml_stories([]) == yaml_stories([], header=False) == 'version: "3.1"\n'
    assert yaml_stories(iter(stories), header=False) == items


# --- YAML scalars, keys and layout, as ruamel writes them ---------------------------------------

SLOT_VALUES: list[tuple[Any, str]] = [
    ("Bob", " Bob"),
    ("", " ''"),
    (" ", " ' '"),
    ("yes", " yes"),
    ("no", " no"),
    ("on", " on"),
    ("y", " y"),
    ("true", " 'true'"),
    ("True", " 'True'"),
    ("FALSE", " 'FALSE'"),
    ("null", " 'null'"),
    ("Null", " 'Null'"),
    ("~", " '~'"),
    ("1", " '1'"),
    ("-1", " '-1'"),
    ("+1", " '+1'"),
    ("1.5", " '1.5'"),
    ("1.", " '1.'"),
    (".5", " '.5'"),
    ("1e3", " '1e3'"),
    ("1E-3", " '1E-3'"),
    ("0x1F", " '0x1F'"),
    ("0o17", " '0o17'"),
    ("017", " '017'"),
    ("0b101", " '0b101'"),
    ("1_000", " '1_000'"),
    ("_1", " _1"),
    (".inf", " '.inf'"),
    ("-.Inf", " '-.Inf'"),
    (".nan", " '.nan'"),
    ("NaN", " NaN"),
    ("2020-01-01", " '2020-01-01'"),
    ("2001-12-14t21:59:43.10-05:00", " '2001-12-14t21:59:43.10-05:00'"),
    ("12:30", " 12:30"),
    ("<<", " '<<'"),
    ("=", " '='"),
    ("==", " =="),
    ("-", " '-'"),
    ("- a", " '- a'"),
    ("-a", " -a"),
    ("?", " '?'"),
    ("? a", " '? a'"),
    ("?a", " ?a"),
    (":", " ':'"),
    (": a", " ': a'"),
    (":a", " :a"),
    ("a:", " 'a:'"),
    ("a: b", " 'a: b'"),
    ("a:b", " a:b"),
    ("#a", " '#a'"),
    ("a #b", " 'a #b'"),
    ("a#b", " a#b"),
    ("'", ' "\'"'),
    ("it's", " it's"),
    ('"', " '\"'"),
    ('say "hi"', ' say "hi"'),
    ("a\nb", ' "a\\nb"'),
    ("trailing ", " 'trailing '"),
    (" leading", " ' leading'"),
    ("\ttab", ' "\\ttab"'),
    ("a\x00b", ' "a\\0b"'),
    ("\x7f", ' "\\x7F"'),
    ("é München", " é München"),
    ("日本語", " 日本語"),
    ("😀", " 😀"),
    ("\ufeff", ' "\\uFEFF"'),
    ("\xa0", " \xa0"),
    ("\u2028", " '\u2028        '"),
    ("a\u2028b", " 'a\u2028        b'"),
    ("---", " '---'"),
    ("--- a", " '--- a'"),
    ("...", " '...'"),
    ("a---", " a---"),
    ("[x]", " '[x]'"),
    ("{x}", " '{x}'"),
    ("a,b", " a,b"),
    ("&a", " '&a'"),
    ("*a", " '*a'"),
    ("!a", " '!a'"),
    ("|", " '|'"),
    (">", " '>'"),
    ("%", " '%'"),
    ("@", " '@'"),
    ("`", " '`'"),
    ("back\\slash", " back\\slash"),
    ("/greet", " /greet"),
    ("a  b", " a  b"),
    ("@home", " '@home'"),
    ("a: b: c", " 'a: b: c'"),
    (None, " null"),
    (True, " true"),
    (False, " false"),
    (0, " 0"),
    (-7, " -7"),
    (1180591620717411303424, " 1180591620717411303424"),
    (1.5, " 1.5"),
    (-0.0, " -0.0"),
    (1e20, " 1e+20"),
    (1e-07, " 1e-07"),
    (3.0, " 3.0"),
    (float("inf"), " .inf"),
    (float("-inf"), " -.inf"),
    (float("nan"), " .nan"),
    ([], " []"),
    ({}, " {}"),
    ([1, [2, []]], "\n      - 1\n      - - 2\n        - []"),
    ({"a": {"b": [1, {}]}}, "\n        a:\n          b:\n          - 1\n          - {}"),
]


@pytest.mark.parametrize(("value", "written"), SLOT_VALUES)
def test_slot_values_are_quoted_like_ruamel(value: Any, written: str) -> None:
    assert (
        slot_yaml("v", value)
        == "- story: s\n  steps:\n  - slot_was_set:\n    - v:" + written + "\n"
    )


SLOT_KEYS: list[tuple[str, str]] = [
    ("name", "name: v"),
    ("", "'': v"),
    ("1", "'1': v"),
    ("yes", "yes: v"),
    ("a b", "a b: v"),
    ("k" * 122, "k" * 122 + ": v"),
    ("k" * 123, "? " + "k" * 123 + "\n      : v"),
    ("a\nb", '? "a\\nb"\n      : v'),
    ("it's", "it's: v"),
    ("-", "'-': v"),
    ("x: y", "'x: y': v"),
]


@pytest.mark.parametrize(("key", "written"), SLOT_KEYS)
def test_slot_keys_are_written_like_ruamel(key: str, written: str) -> None:
    assert slot_yaml(key, "v") == "- story: s\n  steps:\n  - slot_was_set:\n    - " + written + "\n"


@pytest.mark.parametrize(
    ("name", "written"),
    [
        ("conv1", "conv1"),
        ("a b", "a b"),
        ("", "''"),
        ("1", "'1'"),
        ("x (rest)", "x (rest)"),
        ("null", "'null'"),
    ],
)
def test_story_names(name: str, written: str) -> None:
    assert yaml_stories([Story(name, [])], header=False) == f"- story: {written}\n  steps: []\n"


def test_explicit_keys_carry_collections_on_the_colon_line() -> None:
    key = "k" * 123
    out = one_story(SlotSet(key, {"a": 1, "b": []}), SlotSet(key, [1, [2]]))
    assert out.replace(key, "K") == (
        "- story: s\n"
        "  steps:\n"
        "  - slot_was_set:\n"
        "    - ? K\n"
        "      : a: 1\n"
        "        b: []\n"
        "  - slot_was_set:\n"
        "    - ? K\n"
        "      : - 1\n"
        "        - - 2\n"
    )


def test_nested_values() -> None:
    assert slot_yaml("list", [{"x": "y", "z": [{"q": None}]}, "é"]) == (
        "- story: s\n"
        "  steps:\n"
        "  - slot_was_set:\n"
        "    - list:\n"
        "      - x: y\n"
        "        z:\n"
        "        - q: null\n"
        "      - é\n"
    )
    entity = {"entity": "time", "value": {"from": "9", "to": None}}
    assert one_story(user(None, "book", [entity])) == (
        "- story: s\n  steps:\n  - intent: book\n    entities:\n"
        "    - time:\n        from: '9'\n        to: null\n"
    )


def _lines(text: str) -> list[str]:
    return text.split("\n")[3:-1]


def test_long_plain_strings_fold_at_the_first_space_past_column_4096() -> None:
    value = " ".join(["word"] * 1000)
    lines = _lines(slot_yaml("v", value))
    assert [len(line) for line in lines] == [4098, 917]
    assert lines[1].startswith("        word")
    assert lines[0][len("    - v: ") :] + " " + lines[1].strip() == value


def test_long_quoted_strings_fold_too() -> None:
    value = "#" + " ".join(["word"] * 1000)
    lines = _lines(slot_yaml("v", value))
    assert [len(line) for line in lines] == [4100, 918]
    assert lines[0].startswith("    - v: '#word") and lines[1].endswith("word'")
    assert yaml.safe_load(slot_yaml("v", value))[0]["steps"][0]["slot_was_set"][0]["v"] == value


def test_long_double_quoted_strings_fold_with_escaped_breaks() -> None:
    value = "é\t" * 1500 + "x"
    out = slot_yaml("v", value)
    lines = _lines(out)
    assert [len(line) for line in lines] == [4100, 421]
    assert lines[0].endswith("\\t\\") and lines[1].startswith("        é\\té")
    assert yaml.safe_load(out)[0]["steps"][0]["slot_was_set"][0]["v"] == value


def test_double_quoted_folds_escape_a_leading_space() -> None:
    value = "'" + " ".join(["word"] * 1000)
    out = slot_yaml("v", value)
    lines = _lines(out)
    assert [len(line) for line in lines] == [4101, 920]
    assert lines[0].startswith("    - v: \"'word") and lines[0].endswith("word\\")
    assert lines[1].startswith("        \\ word") and lines[1].endswith('word"')
    assert yaml.safe_load(out)[0]["steps"][0]["slot_was_set"][0]["v"] == value


def test_long_values_fold_after_a_long_simple_key() -> None:
    key = " ".join(["k"] * 60)  # 119 characters: still a simple key
    value = " ".join(["v"] * 3000)
    lines = _lines(slot_yaml(key, value))
    assert lines[0].startswith(f"    - {key}: v v")
    assert len(lines) == 2


def test_values_json_cannot_hold_are_refused() -> None:
    with pytest.raises(UnsupportedStoryFormat, match="tuple"):
        slot_yaml("v", (1, 2))
    with pytest.raises(TypeError):
        dump({"v": {1, 2}})


def test_the_emitter_writes_markers_and_lists_at_the_root() -> None:
    assert dump([Literal("a\n"), DoubleQuoted("x"), {}]) == '- |\n  a\n- "x"\n- {}\n'
    assert dump({"k": Literal("")}) == "k: |\n"


# --- inline entity annotation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "entities", "expected"),
    [
        ("I live in Berlin", BERLIN, "I live in [Berlin](city)"),
        (
            "I live in Berlin",
            [{"entity": "city", "value": "berlin", "start": 10, "end": 16}],
            'I live in [Berlin]{"entity": "city", "value": "berlin"}',
        ),
        (
            "fly to Berlin",
            [{"entity": "city", "value": "Berlin", "start": 7, "end": 13, "role": "to"}],
            'fly to [Berlin]{"entity": "city", "role": "to"}',
        ),
        (
            "in München",
            [
                {"entity": "city", "value": "Munich", "start": 3, "end": 10, "group": "1"},
                {"entity": "place", "value": "München", "start": 3, "end": 10},
            ],
            'in [München][{"entity": "city", "group": "1", "value": "Munich"},'
            ' {"entity": "place"}]',
        ),
        (
            "x",
            [{"entity": "a", "value": "ü", "start": 0, "end": 1}],
            '[x]{"entity": "a", "value": "\\u00fc"}',
        ),
        (
            "count 0",
            [{"entity": "n", "value": 0, "start": 6, "end": 7}],
            'count [0]{"entity": "n", "value": 0}',
        ),
        ("no span", [{"entity": "a", "value": "b"}, "junk"], "no span"),
        ("/greet", BERLIN, "/greet"),
        ("[Berlin](city) is big", [], "Berlin is big"),
        ('[Rasa][{"entity": "a"}, {"entity": "b", "value": 1}] ok', [], "Rasa ok"),
        ("[Berlin](city:Berlin) [x][]", [], "Berlin x"),
        ("hello world", [{"entity": "e", "start": None, "end": 3}], "hello world[hel](e)lo world"),
        (
            "hello world",
            [
                {"entity": "e", "value": "v", "start": -3, "end": -1},
                {"entity": "f", "start": True, "end": 4},
            ],
            'hello wo[rl]{"entity": "e", "value": "v"}[ell](f)o world',
        ),
        ("ab", [{"start": 0, "end": 1}], "[a](None)b"),
        (
            "ab",
            [{"entity": "e", "value": "", "start": 1, "end": 1}],
            'a[]{"entity": "e", "value": ""}b',
        ),
    ],
)
def test_annotate(text: str, entities: list[Any], expected: str) -> None:
    assert annotate(text, "intent", entities) == expected


@pytest.mark.parametrize(
    ("text", "intent", "entities"),
    [
        ("[x]{bad}", None, []),
        ('[x]{"value": 1}', None, []),
        ('[x]{"entity": "a", "role": 5}', None, []),
        ('[x]{"entity": "a", "value": true}', None, []),
        ('[x][{"entity": 1}]', None, []),
        ("hi", "a/b/c", []),
        (
            "hello",
            None,
            [{"entity": "a", "start": 0, "end": 2}, {"entity": "b", "start": 0, "end": 3}],
        ),
        ("hello", None, [{"entity": "a", "start": 1.0, "end": 2}]),
        (
            "hello",
            None,
            [{"entity": "a", "start": None, "end": 2}, {"entity": "b", "start": 3, "end": 4}],
        ),
    ],
)
def test_annotation_errors_follow_rasa(text: str, intent: str | None, entities: list[Any]) -> None:
    with pytest.raises(UnsupportedStoryFormat):
        annotate(text, intent, entities)
    with pytest.raises(UnsupportedStoryFormat):
        one_story(user(text, intent, entities), test_stories=True)


def test_retrieval_intents_are_fine_for_annotation() -> None:
    assert annotate("hi", "faq/ask", []) == "hi"
    assert annotate("hi", "", []) == "hi"


# --- properties -----------------------------------------------------------------------------------

_STR_TAG = "tag:yaml.org,2002:str"
_resolver = yaml.resolver.Resolver()


def _plain_reads_as_string(text: str) -> bool:
    """PyYAML (YAML 1.1) reads a plain scalar the same way: leave out 1.1-only words (yes, 1:20).

    (Likewise floats: ruamel writes ``1e-05`` plain, which YAML 1.1 reads as a string.)
    """
    tag = _resolver.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
    return bool(tag == _STR_TAG)


_text = st.text(
    st.characters(exclude_characters="\x85\u2028\u2029\ufeff", exclude_categories=["Cs"]),
    max_size=12,
).filter(_plain_reads_as_string)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False).filter(lambda x: "e" not in repr(x))
    | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_text, _json), max_size=4), _text)
def test_yaml_reads_back_as_the_same_steps(slots: list[tuple[str, Any]], name: str) -> None:
    """Layout, quoting and escapes hold together: a YAML parser reads back the steps written."""
    out = yaml_stories([Story(name, [SlotSet(key, value) for key, value in slots])])
    steps = [{"slot_was_set": [{key: value}]} for key, value in slots]
    assert yaml.safe_load(out) == {"version": "3.1", "stories": [{"story": name, "steps": steps}]}
