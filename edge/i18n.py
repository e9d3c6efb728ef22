"""Every string the van UI shows people, in one catalogue: Ukrainian first, English too.

Templates call ``t("key")``; a missing key in the chosen language falls back
to Ukrainian, and a key missing everywhere shows itself (so it is noticed in
tests, never crashes a page).  The language comes from the ``mo_lang``
cookie, set by the switch in the page header.
"""

from __future__ import annotations

from collections.abc import Callable

LANGUAGES = ("uk", "en")
DEFAULT = "uk"
COOKIE = "mo_lang"

CATALOGUE: dict[str, dict[str, str]] = {
    "app.title": {"uk": "Мобільний офіс", "en": "Mobile Office"},
    "app.centre": {"uk": "ЦНАП", "en": "ASC"},
    "nav.new_application": {"uk": "Нова заява", "en": "New application"},
    "nav.logout": {"uk": "Вийти", "en": "Log out"},
    "nav.skip": {"uk": "Перейти до змісту", "en": "Skip to content"},
    "lang.switch": {"uk": "English", "en": "Українська"},
    "status.gps": {"uk": "GPS", "en": "GPS"},
    "status.gps.fix": {"uk": "є сигнал", "en": "fix"},
    "status.gps.no_fix": {"uk": "немає фіксації", "en": "no fix"},
    "status.gps.no_receiver": {"uk": "немає приймача", "en": "no receiver"},
    "status.gps.gpsd_down": {"uk": "gpsd недоступний", "en": "gpsd down"},
    "status.link": {"uk": "Зв'язок з ЦНАП", "en": "Link to HQ"},
    "status.link.up": {"uk": "є (MQTT)", "en": "up (MQTT)"},
    "status.link.down": {"uk": "немає", "en": "down"},
    "status.sat": {"uk": "Супутник", "en": "Satellite"},
    "status.sat.none": {"uk": "немає модема", "en": "no modem"},
    "status.sat.signal": {"uk": "сигнал", "en": "signal"},
    "status.pending": {"uk": "Чекають відправлення", "en": "Waiting to send"},
    "status.oldest": {"uk": "найстаріший", "en": "oldest"},
    "status.last_ack": {"uk": "Останнє підтвердження ЦНАП", "en": "Last HQ acknowledgement"},
    "status.never": {"uk": "ще не було", "en": "none yet"},
    "status.store": {"uk": "Сховище", "en": "Store"},
    "status.store.locked": {"uk": "заблоковане", "en": "locked"},
    "status.store.open": {"uk": "відкрите", "en": "unlocked"},
    "login.title": {"uk": "Вхід адміністратора", "en": "Administrator login"},
    "login.username": {"uk": "Ім'я користувача", "en": "Username"},
    "login.password": {"uk": "Пароль", "en": "Password"},
    "login.submit": {"uk": "Увійти", "en": "Log in"},
    "login.failed": {"uk": "Неправильне ім'я користувача або пароль", "en": "Wrong username or password"},
    "login.locked_notice": {
        "uk": "Після перезапуску дані громадян зашифровані й недоступні, доки адміністратор не увійде. Передавання до ЦНАП і запис маршруту тривають.",
        "en": "After a restart citizens' data stays encrypted until an administrator logs in. Delivery to HQ and route recording go on.",
    },
    "login.expired": {"uk": "Сеанс завершено через бездіяльність. Увійдіть знову.", "en": "Your session timed out. Please log in again."},
    "intake.title": {"uk": "Нова заява", "en": "New application"},
    "intake.applicant": {"uk": "Заявник", "en": "Applicant"},
    "intake.surname": {"uk": "Прізвище", "en": "Surname"},
    "intake.given_name": {"uk": "Ім'я", "en": "Given name"},
    "intake.rnokpp": {"uk": "РНОКПП (10 цифр)", "en": "Taxpayer number (RNOKPP, 10 digits)"},
    "intake.service": {"uk": "Послуга", "en": "Service"},
    "intake.service.search": {"uk": "Пошук послуги за назвою або кодом", "en": "Find a service by name or code"},
    "intake.service.choose": {"uk": "— оберіть послугу —", "en": "— choose a service —"},
    "intake.documents": {"uk": "Документи, які треба перевірити", "en": "Documents to check"},
    "intake.submit": {"uk": "Зберегти заяву", "en": "Save application"},
    "intake.fix_fields": {"uk": "Перевірте поля, позначені червоним", "en": "Please check the fields marked in red"},
    "saved.title": {"uk": "Заяву збережено", "en": "Application saved"},
    "saved.number": {"uk": "Номер заяви", "en": "Application number"},
    "saved.durable": {
        "uk": "Заява надійно збережена на цьому пристрої й буде передана до ЦНАП, щойно з'явиться зв'язок.",
        "en": "The application is safely stored on this device and will reach HQ as soon as there is a connection.",
    },
    "receipt.title": {"uk": "Розписка про прийняття заяви", "en": "Application receipt"},
    "receipt.print": {"uk": "Друкувати", "en": "Print"},
    "receipt.print_80": {"uk": "Друк на чековому принтері (80 мм)", "en": "Print on a receipt printer (80 mm)"},
    "receipt.service": {"uk": "Послуга", "en": "Service"},
    "receipt.applicant": {"uk": "Заявник", "en": "Applicant"},
    "receipt.date": {"uk": "Дата прийняття", "en": "Received on"},
    "receipt.documents": {"uk": "Документи, надані для перевірки", "en": "Documents presented"},
    "receipt.term": {"uk": "Строк надання послуги", "en": "Term"},
    "receipt.term_value": {"uk": "до 10 робочих днів; про готовність повідомимо", "en": "up to 10 working days; we will notify you when ready"},
    "receipt.qr": {"uk": "QR-код із номером заяви: збережіть його", "en": "QR code with the application number: keep it"},
    "receipt.next": {"uk": "Наступний громадянин", "en": "Next citizen"},
    "error.home": {"uk": "На головну", "en": "Home"},
    "nav.today": {"uk": "Черга", "en": "Queue"},
    "nav.applicants": {"uk": "Заявники", "en": "Applicants"},
    "nav.visits": {"uk": "Візити", "en": "Home visits"},
    "visits.title": {"uk": "Домашні візити", "en": "Home visits"},
    "visits.none": {"uk": "Призначених візитів немає", "en": "No visits assigned"},
    "visits.start": {"uk": "Розпочати візит", "en": "Start the visit"},
    "visits.finish": {"uk": "Завершити візит", "en": "Finish the visit"},
    "visits.new_application": {"uk": "Заява під час візиту", "en": "Application during the visit"},
    "visits.purpose": {"uk": "Мета", "en": "Purpose"},
    "visits.category": {"uk": "Категорія", "en": "Category"},
    "visits.date": {"uk": "Дата", "en": "Date"},
    "applicants.title": {"uk": "Пошук заявника", "en": "Find an applicant"},
    "applicants.by": {"uk": "Знайти за", "en": "Find by"},
    "applicants.find": {"uk": "Знайти", "en": "Find"},
    "applicants.none": {"uk": "Нікого не знайдено. Створіть нову картку заявника.", "en": "Nobody found. Create a new applicant card."},
    "applicants.new": {"uk": "Нова картка заявника", "en": "New applicant card"},
    "applicants.use": {"uk": "Нова заява для цього заявника", "en": "New application for this applicant"},
    "applicants.save": {"uk": "Зберегти картку", "en": "Save the card"},
    "applicants.warnings": {"uk": "Зверніть увагу", "en": "Please note"},
    "applicant.patronymic": {"uk": "По батькові", "en": "Patronymic"},
    "applicant.birth_date": {"uk": "Дата народження (ДД.ММ.РРРР)", "en": "Date of birth (DD.MM.YYYY)"},
    "applicant.unzr": {"uk": "УНЗР (РРРРММДД-NNNNC)", "en": "Unique record number (UNZR)"},
    "applicant.document_type": {"uk": "Документ", "en": "Identity document"},
    "applicant.id_card": {"uk": "ID-картка", "en": "ID card"},
    "applicant.passport_book": {"uk": "Паспорт-книжечка", "en": "Passport booklet"},
    "applicant.document_number": {"uk": "Номер документа", "en": "Document number"},
    "applicant.phone": {"uk": "Телефон", "en": "Phone"},
    "applicant.email": {"uk": "Електронна пошта", "en": "E-mail"},
    "applicant.address": {"uk": "Адреса", "en": "Address"},
    "applicant.rnokpp_absent_reason": {"uk": "Якщо РНОКПП немає: причина (відмова з релігійних переконань тощо)", "en": "No taxpayer number: reason"},
    "queue.title": {"uk": "Черга на сьогодні", "en": "Today's queue"},
    "queue.issue": {"uk": "Видати талон", "en": "Issue a ticket"},
    "queue.issue_prereg": {"uk": "Талон за попереднім записом", "en": "Ticket for a pre-registered citizen"},
    "queue.call_next": {"uk": "Викликати наступного", "en": "Call next"},
    "queue.empty": {"uk": "Черга порожня", "en": "Nobody is waiting"},
    "queue.waiting": {"uk": "Очікують", "en": "Waiting"},
    "queue.served": {"uk": "Обслуговано", "en": "Served"},
    "queue.no_show": {"uk": "Не з'явився", "en": "Did not come"},
    "queue.called": {"uk": "Викликано", "en": "Called"},
    "queue.ticket": {"uk": "Талон", "en": "Ticket"},
    "queue.status": {"uk": "Стан", "en": "Status"},
    "queue.actions": {"uk": "Дії", "en": "Actions"},
    "queue.new_ticket": {"uk": "Видано талон", "en": "Ticket issued"},
    "queue.prereg_first": {"uk": "Громадян за попереднім записом викликають першими.", "en": "Pre-registered citizens are called first."},
    "status.waiting": {"uk": "очікує", "en": "waiting"},
    "status.called": {"uk": "викликано", "en": "called"},
    "status.served": {"uk": "обслуговано", "en": "served"},
    "status.no_show": {"uk": "не з'явився", "en": "did not come"},
    "intake.or_package": {"uk": "або пакет послуг за життєвою ситуацією", "en": "or a life-situation package"},
    "intake.package": {"uk": "Пакет послуг", "en": "Service package"},
    "intake.package.none": {"uk": "— без пакета —", "en": "— no package —"},
    "intake.consent": {"uk": "Заявник погодився на обробку персональних даних", "en": "The applicant consented to personal data processing"},
    "receipt.numbers": {"uk": "Номери заяв пакета", "en": "Application numbers in the package"},
    "receipt.rate": {"uk": "Оцініть обслуговування: відскануйте QR-код телефоном (Wi-Fi фургона)", "en": "Rate the service: scan the QR code with a phone (van Wi-Fi)"},
    "receipt.rate_here": {"uk": "Оцінити на цьому планшеті", "en": "Rate on this tablet"},
    "rate.title": {"uk": "Оцініть, будь ласка, обслуговування", "en": "Please rate the service"},
    "rate.score": {"uk": "Ваша оцінка", "en": "Your rating"},
    "rate.comment": {"uk": "Коментар (необов'язково)", "en": "Comment (optional)"},
    "rate.submit": {"uk": "Надіслати оцінку", "en": "Send rating"},
    "rate.thanks": {"uk": "Дякуємо за вашу оцінку!", "en": "Thank you for your rating!"},
    "rate.done": {"uk": "Цю послугу вже оцінено. Дякуємо!", "en": "This service has already been rated. Thank you!"},
    "rate.s1": {"uk": "1 — дуже погано", "en": "1 — very poor"},
    "rate.s2": {"uk": "2 — погано", "en": "2 — poor"},
    "rate.s3": {"uk": "3 — задовільно", "en": "3 — fair"},
    "rate.s4": {"uk": "4 — добре", "en": "4 — good"},
    "rate.s5": {"uk": "5 — відмінно", "en": "5 — excellent"},
}


def translate(key: str, lang: str) -> str:
    entry = CATALOGUE.get(key)
    if entry is None:
        return key
    return entry.get(lang) or entry[DEFAULT]


def translator(lang: str) -> Callable[[str], str]:
    lang = lang if lang in LANGUAGES else DEFAULT
    return lambda key: translate(key, lang)
