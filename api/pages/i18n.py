"""The pages' words in English and Chinese, chosen by the browser's Accept-Language."""

from __future__ import annotations

from typing import Callable

LANGUAGES = ("en", "zh")

#: key -> (English, Chinese). One table, so a word missing in one language shows up in review.
MESSAGES: dict[str, tuple[str, str]] = {
    "app": ("idgraph", "idgraph"),
    "skip": ("Skip to content", "跳到正文"),
    "signin": ("Sign in", "登录"),
    "signout": ("Sign out", "退出"),
    "signin.lead": ("Paste the access token you were given. It is kept in a cookie only this site can read, "
                    "never in an address.", "粘贴您收到的访问令牌。令牌只保存在本站可读的 Cookie 中，不会出现在网址里。"),
    "token": ("Access token", "访问令牌"),
    "token.bad": ("That token is not valid. Check it and try again.", "令牌无效，请检查后重试。"),
    "token.missing": ("Enter your access token.", "请输入访问令牌。"),
    "session.expired": ("Your session has ended. Sign in again.", "会话已结束，请重新登录。"),
    "form.stale": ("This form has expired. Reload the page and try again.", "表单已过期，请刷新页面后重试。"),
    "profile": ("Your profile", "我的档案"),
    "profile.of": ("Profile", "档案"),
    "merged.into": ("This id was merged into", "此编号已合并到"),
    "identifiers": ("Identifiers", "标识"),
    "identifiers.masked": ("Shown partly hidden.", "部分隐藏显示。"),
    "traits": ("What we hold about you", "我们保存的信息"),
    "traits.staff": ("Traits", "属性"),
    "trait": ("Trait", "属性"),
    "value": ("Value", "值"),
    "source": ("Source", "来源"),
    "observed": ("When", "时间"),
    "none": ("None", "无"),
    "consent": ("Consent", "授权"),
    "purpose": ("Purpose", "用途"),
    "status": ("Status", "状态"),
    "granted": ("Granted", "已同意"),
    "withdrawn": ("Not granted", "未同意"),
    "grant": ("Grant", "同意"),
    "withdraw": ("Withdraw", "撤回"),
    "purpose.marketing": ("Marketing", "营销"),
    "purpose.ai_training": ("AI training", "AI 训练"),
    "purpose.analytics": ("Analytics", "分析"),
    "purpose.third_party_sharing": ("Sharing with third parties", "向第三方共享"),
    "consent.saved": ("Your consent was updated.", "授权已更新。"),
    "correct": ("Correct your details", "更正个人信息"),
    "correct.lead": ("You may correct these; your correction outranks what our systems record.",
                     "以下信息可由您更正；您的更正优先于系统记录。"),
    "correct.save": ("Save corrections", "保存更正"),
    "correct.saved": ("Your correction was saved.", "更正已保存。"),
    "correct.none": ("Nothing to correct: change a value first.", "没有需要更正的内容：请先修改某个值。"),
    "correct.refused": ("Not applied", "未应用"),
    "timeline": ("Timeline", "时间线"),
    "search": ("Search the timeline", "搜索时间线"),
    "search.hint": ("Words, and a time such as \"last month\" or \"去年\".", "关键词，以及\"上个月\"\"last year\"等时间。"),
    "search.go": ("Search", "搜索"),
    "search.results": ("Results for", "搜索结果："),
    "search.none": ("Nothing in the timeline matches.", "时间线中没有匹配的内容。"),
    "search.clear": ("Show everything", "显示全部"),
    "when": ("When", "时间"),
    "scenario": ("Scenario", "场景"),
    "type": ("Type", "类型"),
    "details": ("Details", "详情"),
    "export": ("Download my data", "下载我的数据"),
    "export.lead": ("Everything held about you, as one JSON file.", "以一个 JSON 文件下载我们保存的全部数据。"),
    "erase": ("Erase my data", "删除我的数据"),
    "erase.lead": ("Erasure removes your personal data everywhere and cannot be undone.",
                   "删除会清除各处的个人数据，且无法撤销。"),
    "erase.confirm": ("Yes, erase my data: I understand this cannot be undone.", "是的，删除我的数据：我知道此操作无法撤销。"),
    "erase.confirm.missing": ("Tick the box to confirm the erasure.", "请勾选复选框以确认删除。"),
    "erase.go": ("Erase now", "立即删除"),
    "erase.cancel": ("Keep my data", "保留我的数据"),
    "erased": ("Your data was erased", "您的数据已删除"),
    "erased.lead": ("Only a record that an erasure took place is kept.", "仅保留一条已执行删除的记录。"),
    "error": ("Something is wrong", "出错了"),
    "error.404": ("Not found", "未找到"),
    "error.403": ("Not allowed", "无权访问"),
    "error.401": ("Sign in first", "请先登录"),
    "error.409": ("Changed meanwhile", "内容已变更"),
    "error.422": ("Check the form", "请检查表单"),
    "error.500": ("The server failed; it has been logged.", "服务器出错，已记录。"),
    "error.503": ("Busy; try again in a moment.", "系统繁忙，请稍后重试。"),
    "back": ("Back", "返回"),
    "console": ("Operator console", "运营控制台"),
    "counters": ("Now", "当前"),
    "counter.open_reviews": ("Open reviews", "待审核"),
    "counter.events_per_second": ("Events/s", "事件/秒"),
    "counter.dead_letters": ("Dead letters", "死信"),
    "counter.lag": ("Consumer lag", "消费延迟"),
    "reviews": ("Review queue", "审核队列"),
    "reviews.none": ("No proposals are waiting.", "没有待审核的提议。"),
    "review": ("Proposal", "提议"),
    "review.reason": ("Reason for your verdict", "审核理由"),
    "review.reason.missing": ("Give a reason for the verdict.", "请填写审核理由。"),
    "approve": ("Approve: same person", "批准：同一人"),
    "reject": ("Reject: keep apart", "拒绝：保持分开"),
    "evidence": ("Evidence", "证据"),
    "prior": ("Prior", "先验"),
    "total": ("Match weight", "匹配权重"),
    "probability": ("Probability", "概率"),
    "weight": ("Weight (bits)", "权重（比特）"),
    "level": ("Level", "级别"),
    "field": ("Field", "字段"),
    "candidate": ("Candidate", "候选"),
    "trace": ("Decision trace", "决策追踪"),
    "trace.lead": ("Why an event was resolved the way it was.", "某个事件为何如此判定。"),
    "event_id": ("Event id", "事件编号"),
    "trace.open": ("Show", "查看"),
    "trace.none": ("No decision is recorded for that event.", "没有该事件的决策记录。"),
    "sandboxes": ("Sandboxes", "沙盒"),
    "sandboxes.lead": ("Copies of the live graph where candidate rules were replayed: what each would change "
                       "if promoted.", "实时图的副本，在其中重放了候选规则：若上线，各自会改变什么。"),
    "sandboxes.none": ("No sandboxes. Make one with: idgraph sandbox create NAME", "暂无沙盒。创建命令：idgraph sandbox create NAME"),
    "sandbox": ("Sandbox", "沙盒"),
    "sandbox.created": ("Created", "创建时间"),
    "sandbox.live_rules": ("Live rules at the snapshot", "快照时的实时规则"),
    "sandbox.not_replayed": ("No candidate replayed yet", "尚未重放候选规则"),
    "diff": ("Decision diff", "决策差异"),
    "diff.lead": ("The baseline is the snapshot under the live rules; the candidate is the same history replayed "
                  "under the rules being tried.", "基线是实时规则下的快照；候选是用待试规则重放的同一历史。"),
    "diff.events": ("Events compared", "比较的事件"),
    "diff.merge": ("Profiles that would merge", "将合并的档案"),
    "diff.split": ("Profiles that would split", "将拆分的档案"),
    "diff.stay": ("Profiles that stay", "保持不变的档案"),
    "diff.moved": ("Events that would move", "将移动的事件"),
    "diff.moves": ("moves", "移动"),
    "diff.changed": ("Decisions that change", "将改变的决策"),
    "diff.explain": ("Open one for both versions' evidence side by side.", "打开任一项，可并排查看两个版本的证据。"),
    "diff.nothing": ("The candidate changes no decision.", "候选规则没有改变任何决策。"),
    "diff.accuracy": ("Accuracy on the labelled events", "带标签事件上的准确度"),
    "precision": ("Precision", "精确率"),
    "recall": ("Recall", "召回率"),
    "diff.baseline": ("Baseline", "基线"),
    "diff.candidate": ("Candidate", "候选"),
    "diff.actions": ("Decisions by action", "按动作统计的决策"),
    "diff.rules": ("Decisions by protection rule", "按保护规则统计的决策"),
    "diff.field_levels": ("Best candidates by field and level", "按字段与级别统计的最佳候选"),
    "diff.side_by_side": ("Both versions' evidence", "两个版本的证据"),
    "diff.no_decision": ("No decision under this version.", "此版本下没有决策。"),
    "profile.open": ("Open a profile", "打开档案"),
    "profile_id": ("Profile id", "档案编号"),
    "lineage": ("Records, identifiers and merge lineage", "记录、标识与合并谱系"),
    "lineage.lead": ("Each touchpoint, the profile it first went to, what was merged into what, and each "
                     "identifier under the touchpoint that first carried it.",
                     "每个接触点、它最初归属的档案、合并关系，以及每个标识及其最初来自的接触点。"),
    "merged": ("merged into", "合并到"),
    "verdict.approved": ("Approved: the profiles were merged.", "已批准：档案已合并。"),
    "verdict.rejected": ("Rejected: the profiles stay apart.", "已拒绝：档案保持分开。"),
    "merge": ("Merge two profiles by hand", "手动合并两个档案"),
    "merge.lead": ("For two profiles you know are one person; the older one survives, and the lineage records "
                   "who merged them and why.", "用于确认属于同一人的两个档案；保留较早的档案，谱系记录合并人及理由。"),
    "merge.first": ("First profile id", "第一个档案编号"),
    "merge.second": ("Second profile id", "第二个档案编号"),
    "merge.reason": ("Reason for the merge", "合并理由"),
    "merge.go": ("Merge", "合并"),
    "merge.done": ("Merged: the profiles are now one.", "已合并：两个档案现为一个。"),
    "merge.ids.missing": ("Enter both profile ids.", "请填写两个档案编号。"),
    "merge.reason.missing": ("Give a reason for the merge.", "请填写合并理由。"),
    "merge.unknown": ("No such profile; check the ids.", "档案不存在，请检查编号。"),
    "merge.same": ("Nothing to merge: these are already one profile.", "无需合并：这些已是同一个档案。"),
    "split": ("Split off a wrong merge", "拆分错误合并"),
    "split.lead": ("Its touchpoints are resolved again with the two profiles kept apart.",
                   "重新判定其接触点，并使两个档案保持分开。"),
    "split.separate": ("Profile to split off", "要拆出的档案"),
    "split.reason": ("Reason for the split", "拆分理由"),
    "split.go": ("Split…", "拆分…"),
    "split.confirm.lead": ("Check before splitting: the touchpoints will be resolved again and the profiles kept "
                           "apart from now on. Only a new merge undoes this.",
                           "拆分前请确认：接触点将被重新判定，此后档案保持分开。只有再次合并才能撤销。"),
    "split.confirm": ("Yes, split them", "确认拆分"),
    "split.cancel": ("Keep them together", "保持合并"),
    "split.done": ("Split: the profiles are apart again.", "已拆分：档案已重新分开。"),
    "split.separate.missing": ("Choose the profile to split off.", "请选择要拆出的档案。"),
    "split.reason.missing": ("Give a reason for the split.", "请填写拆分理由。"),
    # Names of the traits and identifiers the bundled rules and policy know; others show as named.
    "name.name": ("name", "姓名"),
    "name.given_name": ("given name", "名"),
    "name.family_name": ("family name", "姓"),
    "name.address": ("address", "地址"),
    "name.birth_date": ("birth date", "出生日期"),
    "name.city": ("city", "城市"),
    "name.email": ("email", "邮箱"),
    "name.phone": ("phone", "手机"),
    "name.wechat_openid": ("WeChat", "微信"),
    "name.device_id": ("device", "设备"),
    "name.crm_id": ("CRM id", "CRM 编号"),
    "name.national_id": ("national id", "身份证"),
}


def language(accept_language: str | None) -> str:
    """The first of our languages the browser asks for, by its q weights; English otherwise."""
    best, best_q = "en", -1.0
    for position, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                continue
        primary = tag.strip().lower().split("-")[0]
        # Earlier entries win ties, as the header lists them by preference.
        if primary in LANGUAGES and q > best_q and q > 0:
            best, best_q = primary, q - position * 1e-6
    return best


def translator(lang: str) -> Callable[[str], str]:
    index = LANGUAGES.index(lang)

    def t(key: str) -> str:
        """The message; a data name (``name.<trait>``) not in the table shows as itself."""
        if key in MESSAGES:
            return MESSAGES[key][index]
        return key.removeprefix("name.")
    return t
