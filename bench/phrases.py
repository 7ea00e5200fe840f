"""What the simulated users say and the simulated assistant answers (the generator's "domain").

A restaurant-and-weather assistant: intents with example texts (``{city}``, ``{cuisine}``,
``{number}`` and ``{name}`` are filled with entity values), responses per ``utter_`` action, and
the entity values users mention. Non-ASCII values are deliberate: Rasa's broker escapes them.
"""

from __future__ import annotations

ASSISTANT_ID = "restaurant_bot"
MODEL_IDS = ("20231114-101530-brisk-coral", "20231121-083012-quiet-maple")
CHANNELS = ("rest", "socketio", "telegram", "slack", "facebook")
CHANNEL_WEIGHTS = (5, 3, 2, 1, 1)

CITIES = ("Berlin", "Paris", "London", "Lisbon", "Zürich", "São Paulo", "Tokyo", "Kraków")
CUISINES = ("italian", "thai", "mexican", "indian", "japanese", "ethiopian", "vegan")
NAMES = ("John", "Maria", "Ayşe", "Li Wei", "Olu")

FORM = "restaurant_form"
FORM_SLOTS = ("cuisine", "num_people", "outdoor_seating")

TEXTS: dict[str, tuple[str, ...]] = {
    "greet": ("hi", "hello", "hey there", "good morning", "hi bot", "hallo"),
    "goodbye": ("bye", "see you", "goodbye", "talk to you later"),
    "thank": ("thanks", "thank you", "cheers!", "thanks a lot"),
    "affirm": ("yes", "yep", "sure", "sounds good", "of course"),
    "deny": ("no", "nope", "not really", "no thanks"),
    "ask_weather": (
        "what's the weather in {city}",
        "is it raining in {city}?",
        "weather {city} tomorrow",
        "will it be sunny in {city}",
    ),
    "ask_weather_no_city": ("what's the weather like?", "is it going to rain?"),
    "request_restaurant": ("I'm looking for a restaurant", "book a table please"),
    "request_restaurant_cuisine": (
        "can you find me a {cuisine} place",
        "I want to eat {cuisine} food tonight",
    ),
    "inform_cuisine": ("{cuisine}", "{cuisine} please", "I'd like {cuisine} food"),
    "inform_number": ("for {number} people", "{number}", "we are {number}", "table for {number}"),
    "bot_challenge": ("are you a bot?", "am I talking to a human?", "are you real"),
    "human_handoff": ("I want to talk to a human", "agent please", "let me speak to someone"),
    "check_booking": ("what's the status of my booking?", "is my reservation confirmed?"),
    "set_reminder": ("remind me to call {name}", "remind me later", "set a reminder for {name}"),
    "forget_reminders": ("forget about the reminder", "cancel my reminders", "never mind"),
    "stop": ("stop", "cancel that", "I don't want to continue"),
    "nlu_fallback": ("asdfgh", "can you order a pizza to the moon", "purple elephant banana"),
    "out_of_scope": ("what is the meaning of life", "do you like football", "sing me a song"),
    "paused_chat": ("hello?", "are you still there", "my order number is 4471", "ok"),
}

CHITCHAT_QUESTIONS = {
    "ask_name": "what's your name",
    "ask_age": "how old are you",
    "tell_joke": "tell me a joke",
    "ask_whoisit": "who are you?",
}
CHITCHAT_ANSWERS = {
    "ask_name": "I'm Sara, the restaurant bot.",
    "ask_age": "Old enough to book tables.",
    "tell_joke": "Why did the tomato blush? It saw the salad dressing.",
    "ask_whoisit": "I'm a virtual assistant.",
}
CHITCHAT_RESPONSES = tuple(CHITCHAT_QUESTIONS)

RANKING_INTENTS = (
    "greet",
    "goodbye",
    "thank",
    "affirm",
    "deny",
    "ask_weather",
    "request_restaurant",
    "inform",
    "chitchat",
    "bot_challenge",
    "human_handoff",
    "check_booking",
    "set_reminder",
    "out_of_scope",
)

RESPONSES: dict[str, tuple[str, ...]] = {
    "utter_greet": ("Hey! How can I help you?", "Hello! What can I do for you today?"),
    "utter_goodbye": ("Bye!", "Goodbye, have a nice day!"),
    "utter_you_are_welcome": ("You're welcome!", "Happy to help."),
    "utter_iamabot": ("I am a bot, powered by Rasa.",),
    "utter_ask_city": ("For which city?",),
    "utter_ask_cuisine": ("What cuisine would you like?",),
    "utter_ask_num_people": ("How many people?", "For how many guests?"),
    "utter_ask_outdoor_seating": ("Do you want to sit outside?",),
    "utter_submit": ("All done! I booked a table for {num_people}.",),
    "utter_slots_values": ("A {cuisine} restaurant for {num_people} people.",),
    "utter_ask_continue": ("Do you want to stop booking?",),
    "utter_default": ("Sorry, I didn't get that. Can you rephrase?",),
    "utter_cannot_help": ("I can't help with that, sorry. Let's continue with the booking.",),
    "utter_out_of_scope": ("Sorry, I can't handle that request.",),
    "utter_restart": ("Restarted.",),
    "utter_booking_status": ("Your booking {booking_id} is confirmed.",),
    "utter_handoff": ("Connecting you with a human agent...",),
    "utter_reminder_set": ("I will remind you in {minutes} minutes.",),
    "utter_reminder": ("You asked me to remind you to call {name}!", "Here is your reminder."),
    "utter_reminders_cancelled": ("Okay, I cancelled your reminders.",),
    "utter_weather": ("It's {degrees}°C and sunny in {city}.", "Expect rain in {city} today."),
    "utter_wrong": ("I think you want to book a flight?",),
}

E2E_BOT_TEXTS = ("Hi! Nice to see you again.", "Hello, what can I book for you?")

AGENT_TEXTS = ("Hi, this is Anna from support. How can I help?", "Let me check that for you.")

YES_NO_BUTTONS = [
    {"title": "Yes", "payload": "/affirm"},
    {"title": "No", "payload": "/deny"},
]
