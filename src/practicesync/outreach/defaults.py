"""The steps a new Results template starts with (DESIGN.md section 4): SMS on the day,
another SMS three days on, an email at day 7 and a staff call at day 10, the later steps
only while the patient has not booked. SMS and push say no more than that the doctor would
like an appointment; the email may say it is about recent results."""

import datetime as dt

DAY = dt.timedelta(days=1)

DEFAULT_STEPS = (
    {"channel": "sms", "delay": 0 * DAY, "condition": "",
     "body": "Hello {first_name}, this is {practice_name}. Your doctor would like you to make "
             "an appointment. Please book: {booking_link}"},
    {"channel": "sms", "delay": 3 * DAY, "condition": "not_booked",
     "body": "Hello {first_name}, a reminder from {practice_name}: your doctor would like to "
             "see you. Please book an appointment: {booking_link}"},
    {"channel": "email", "delay": 4 * DAY, "condition": "not_booked",
     "subject": "Please book an appointment with {practice_name}",
     "body": "Dear {first_name},\n\nYour doctor at {practice_name} has looked at your recent "
             "results and would like you to make an appointment to talk about them.\n\n"
             "Book an appointment: {booking_link}\n\nIf you have booked already, thank you: "
             "please ignore this email.\n\n{practice_name}"},
    {"channel": "call", "delay": 3 * DAY, "condition": "not_booked",
     "body": "Call the patient to book a results appointment: not booked after three messages."},
)
