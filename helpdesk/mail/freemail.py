"""Free-mail domains: anyone can have an address there, so they never map a sender to a customer."""

FREE_MAIL_DOMAINS = frozenset("""
gmail.com googlemail.com outlook.com hotmail.com hotmail.co.uk hotmail.fr hotmail.de live.com live.co.uk
live.fr msn.com yahoo.com yahoo.co.uk yahoo.fr yahoo.de yahoo.es yahoo.it yahoo.co.jp ymail.com
rocketmail.com aol.com icloud.com me.com mac.com proton.me protonmail.com pm.me gmx.com gmx.de gmx.net
gmx.at gmx.ch web.de t-online.de freenet.de mail.com email.com zoho.com zohomail.com yandex.com
yandex.ru mail.ru inbox.ru list.ru bk.ru qq.com 163.com 126.com sina.com naver.com hanmail.net
orange.fr wanadoo.fr free.fr laposte.net sfr.fr libero.it virgilio.it tiscali.it seznam.cz wp.pl
o2.pl interia.pl onet.pl fastmail.com hey.com tutanota.com tuta.io mailbox.org posteo.de
""".split())


def is_free_mail(domain: str) -> bool:
    """Tell whether a domain is a public free-mail provider."""
    return domain.strip().lower().lstrip("@") in FREE_MAIL_DOMAINS
